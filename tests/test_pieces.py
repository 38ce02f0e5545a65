"""A provider that streams its answer in tiny pieces must cost linear time, not quadratic.

The Responses, Gemini and Ollama front-ends put a streamed answer's text and tool-call
arguments together. Doing that with `text += piece` on a string held in an object copies the
whole text per piece: with the pieces below (1 MiB of text in 8-byte pieces) the last pieces
cost ~100x the first ones and the whole stream seconds of a blocked event loop. The timing
checks compare the cost of the last pieces with the cost of the first ones in the same run,
so they do not depend on how fast the machine is.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import msgspec

from thanos_asgi.frontends import _responses_out as out
from thanos_asgi.frontends._pieces import Calls, Pieces
from thanos_asgi.frontends._responses_types import ResponseObject
from thanos_asgi.types import (
    ChatChunk,
    ChunkChoice,
    Delta,
    FunctionCallDelta,
    ToolCallDelta,
)

PIECE = "abcdefgh"
COUNT = 131_072  # 1 MiB of text in all
WINDOW = 8_192


def _first_and_last(step: Callable[[], object]) -> tuple[float, float]:
    """Seconds spent on the first and on the last `WINDOW` of `COUNT` calls of `step` (the
    cyclic garbage collector paused: a collection in one window only would skew them)."""
    gc.disable()
    try:
        return _timed(step)
    finally:
        gc.enable()


def _timed(step: Callable[[], object]) -> tuple[float, float]:
    started = time.perf_counter()
    for _ in range(WINDOW):
        step()
    first = time.perf_counter() - started
    for _ in range(COUNT - 2 * WINDOW):
        step()
    started = time.perf_counter()
    for _ in range(WINDOW):
        step()
    return first, time.perf_counter() - started


def _linear(first: float, last: float) -> None:
    assert last < 4 * first + 0.05, f"the last pieces took {last / first:.1f}x the first ones"


def test_pieces_join_what_arrived() -> None:
    pieces = Pieces()
    assert pieces.text() == ""
    for piece in ("ab", "", "c"):
        pieces.add(piece)
    assert pieces.text() == "abc"
    pieces.add("d")
    assert pieces.text() == "abcd"


def test_calls_gather_names_and_arguments_by_index() -> None:
    calls = Calls()
    assert not calls
    calls.add(ToolCallDelta(index=1, function=FunctionCallDelta(name="get_", arguments='{"a"')))
    calls.add(ToolCallDelta(index=0, function=FunctionCallDelta(name="other", arguments="{}")))
    calls.add(ToolCallDelta(index=1, function=FunctionCallDelta(name="weather", arguments=":1}")))
    calls.add(ToolCallDelta(function=FunctionCallDelta(name="unnumbered")))  # next free index
    assert calls.whole() == [
        ("get_weather", '{"a":1}'),
        ("other", "{}"),
        ("unnumbered", ""),
    ]


def test_tool_call_arguments_in_tiny_pieces_cost_linear_time() -> None:
    calls = Calls()
    delta = ToolCallDelta(index=0, function=FunctionCallDelta(arguments=PIECE))
    _linear(*_first_and_last(lambda: calls.add(delta)))
    assert calls.whole() == [("", PIECE * COUNT)]


def test_a_responses_stream_in_tiny_pieces_costs_linear_time() -> None:
    shell = ResponseObject(id="resp_1", created_at=0, status="in_progress", model="m")
    events = out.Events(shell)
    events.start()
    text = ChatChunk(
        id="c", created=0, model="m", choices=[ChunkChoice(index=0, delta=Delta(content=PIECE))]
    )
    _linear(*_first_and_last(lambda: events.feed(text)))
    ended = events.end(None)
    done = [
        msgspec.json.decode(line[len(b"data: ") :])
        for line in ended.split(b"\n")
        if line.startswith(b"data: ")
    ]
    assert done[0]["type"] == "response.output_text.done"
    assert done[0]["text"] == PIECE * COUNT
    assert shell.output[0].content[0].text == PIECE * COUNT  # type: ignore[union-attr]


def test_a_responses_tool_call_in_tiny_pieces_is_whole_at_the_end() -> None:
    shell = ResponseObject(id="resp_2", created_at=0, status="in_progress", model="m")
    events = out.Events(shell)
    pieces = ['{"ci', 'ty": ', '"Par', 'is"}']
    for number, piece in enumerate(pieces):
        function = FunctionCallDelta(name="weather" if number == 0 else None, arguments=piece)
        call = ToolCallDelta(index=0, id="call_1" if number == 0 else None, function=function)
        delta = Delta(tool_calls=[call])
        events.feed(ChatChunk(id="c", created=0, model="m", choices=[ChunkChoice(delta=delta)]))
    ended = events.end(None)
    assert b'"arguments":"{\\"city\\": \\"Paris\\"}"' in ended
    assert shell.output[0].arguments == '{"city": "Paris"}'  # type: ignore[union-attr]


def _call_chunk(piece: str) -> ChatChunk:
    call = ToolCallDelta(index=0, function=FunctionCallDelta(arguments=piece))
    return ChatChunk(id="c", model="m", choices=[ChunkChoice(delta=Delta(tool_calls=[call]))])


def test_the_gemini_front_end_gathers_streamed_calls_in_linear_time() -> None:
    from thanos_asgi.frontends import gemini

    calls, chunk = Calls(), _call_chunk(PIECE)
    _linear(*_first_and_last(lambda: gemini._delta(chunk, calls, None)))
    assert calls.whole() == [("", PIECE * COUNT)]


def test_the_ollama_front_end_gathers_streamed_calls_in_linear_time() -> None:
    from thanos_asgi.frontends import ollama

    calls, chunk, shape = Calls(), _call_chunk(PIECE), ollama._Shape("m", True, 0.0)
    _linear(*_first_and_last(lambda: ollama._delta(chunk, shape, calls, None)))
    assert calls.whole() == [("", PIECE * COUNT)]
