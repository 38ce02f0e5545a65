"""The hot path's shortcuts keep every check: what they skip could not have failed."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from thanos_asgi import sanitize
from thanos_asgi.core.validation import check_ranges
from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.sanitize import MAX_DEPTH, Decoder, NestingTooDeep, check_model_name
from thanos_asgi.types import ChatRequest, Message

DEEP = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)


@pytest.mark.parametrize("form", [bytes, bytearray, memoryview, lambda b: b.decode()])
def test_deep_json_is_refused_in_every_form(form: object) -> None:
    for decode in (Decoder().decode, sanitize.decode):
        with pytest.raises(NestingTooDeep):
            decode(form(DEEP))  # type: ignore[operator]


def test_shallow_json_with_many_openers_inside_strings_still_decodes() -> None:
    text = b'{"a": "' + b"[" * (MAX_DEPTH * 2) + b'"}'
    assert sanitize.decode(text) == {"a": "[" * (MAX_DEPTH * 2)}
    assert isinstance(msgspec.json.decode(text), dict)


def test_model_names_that_passed_are_remembered_but_bounded() -> None:
    for index in range(3000):
        check_model_name(f"model-{index}")
    assert len(sanitize.GOOD_NAMES) <= 1024
    for bad in ("a\nb", "x" * 300, "../etc", "a/./b"):
        for _ in range(2):  # refused every time, never remembered
            with pytest.raises(InvalidRequest):
                check_model_name(bad)
        assert bad not in sanitize.GOOD_NAMES


def test_a_request_with_no_ranged_field_is_checked_for_its_model_only() -> None:
    messages = [Message(role="user", content="hi")]
    check_ranges(ChatRequest(model="ok-model", messages=messages))
    with pytest.raises(InvalidRequest):
        check_ranges(ChatRequest(model="bad\x00model", messages=messages))
    with pytest.raises(InvalidRequest):
        check_ranges(ChatRequest(model="ok-model", messages=messages, logit_bias={"1": 101.0}))
    with pytest.raises(InvalidRequest):
        check_ranges(ChatRequest(model="ok-model", messages=messages, temperature=float("nan")))


_TEXTS = ["tok ", "", 'quote " and \\ back', "line\nbreak\ttab\x00nul", "é中文🙂", "\u2028\u2029"]


@settings(derandomize=True, max_examples=300)
@given(text=st.one_of(st.sampled_from(_TEXTS), st.text()), index=st.integers(0, 10**9))
def test_the_messages_text_delta_literal_is_the_struct_encoded(text: str, index: int) -> None:
    """The Anthropic front-end builds its most frequent event as bytes; they must be those
    of the typed event it replaces."""
    from thanos_asgi.frontends._anthropic_out import _TEXT_DELTA, _encode, _frame
    from thanos_asgi.providers.anthropic_types import BlockDelta, ContentBlockDelta

    typed = ContentBlockDelta(index=index, delta=BlockDelta(type="text_delta", text=text))
    assert _TEXT_DELTA % (index, _encode(text)) == _frame(b"content_block_delta", typed)


@settings(derandomize=True, max_examples=200)
@given(texts=st.lists(st.sampled_from(_TEXTS[:1] + _TEXTS[2:]) | st.text(min_size=1), min_size=1))
def test_the_responses_text_deltas_by_hand_are_the_generic_event(texts: list[str]) -> None:
    """The Responses front-end writes a message's later text deltas from a prefix made once;
    each must parse to what `Events.event` makes of it, numbered in turn."""
    from thanos_asgi.frontends._responses_out import Events
    from thanos_asgi.frontends._responses_types import ResponseObject
    from thanos_asgi.types import ChatChunk, ChunkChoice, Delta

    events = Events(ResponseObject(id="resp_1", created_at=1, status="queued", model="m"))
    head = events.start()
    generic = Events(ResponseObject(id="resp_1", created_at=1, status="in_progress", model="m"))
    shell = generic.shell
    assert head == generic.event("response.created", response=shell) + generic.event(
        "response.in_progress", response=shell
    )  # the two first events, the response encoded once
    chunks = [ChatChunk(choices=[ChunkChoice(delta=Delta(content=text))]) for text in texts]
    out = b"".join(events.feed(chunk) for chunk in chunks) + events.end(None)
    parsed = [msgspec.json.decode(block.split(b"\ndata: ", 1)[1]) for block in
              (head + out).split(b"\n\n")[:-1]]  # fmt: skip
    assert [event["sequence_number"] for event in parsed] == list(range(len(parsed)))
    deltas = [event for event in parsed if event["type"] == "response.output_text.delta"]
    assert [event["delta"] for event in deltas] == texts
    item = next(e["item"]["id"] for e in parsed if e["type"] == "response.output_item.added")
    for event in deltas:
        expected = {"type": "response.output_text.delta", "delta": event["delta"],
                    "logprobs": [], "item_id": item, "output_index": 0, "content_index": 0,
                    "sequence_number": event["sequence_number"]}  # fmt: skip
        assert event == expected
    done = next(e for e in parsed if e["type"] == "response.output_text.done")
    assert done["text"] == "".join(texts)


_LINES = st.sampled_from(
    [b"event: ", b"event:", b"data: ", b"data:", b"id: 1", b": ping", b"message_stop", b"{}", b" "]
)


@settings(derandomize=True, max_examples=500)
@given(
    parts=st.lists(_LINES | st.binary(max_size=8), max_size=6), joiner=st.sampled_from([b"", b"\n"])
)
def test_a_typed_events_fields_are_parse_blocks(parts: list[bytes], joiner: bytes) -> None:
    from thanos_asgi.upstream.framing import parse_block, typed

    block = joiner.join(parts)
    event = parse_block(block)
    assert typed(block) == (event.event, event.data)
    named = b"event: content_block_delta\ndata: " + block
    event = parse_block(named)
    assert typed(named) == (event.event, event.data)


_NAMES = st.sampled_from([b"content_block_delta", b"ping", b"message_stop", b"", b"a b", b" x"])
_DATAS = st.sampled_from([b'{"a":1}', b"", b" {}", b"[DONE]", b"data: x", b"x\ny", b"\n"])
_WELL_FORMED = st.builds(lambda n, d: b"event: " + n + b"\ndata: " + d, _NAMES, _DATAS)
_BLOCKS = (
    _WELL_FORMED
    | st.builds(lambda d: b"data: " + d, _DATAS)
    | st.lists(_LINES | st.binary(max_size=8).map(lambda b: b.replace(b"\r", b"")), max_size=4).map(
        b"\n".join
    )
)


@settings(derandomize=True, max_examples=1000)
@example(blocks=[b"data: z\nevent: a\ndata: b"], gaps=1)  # a match inside a block
@example(blocks=[b"event: a\ndata: \n"], gaps=1)  # a stray line end after the last
@given(blocks=st.lists(_BLOCKS, min_size=1, max_size=6), gaps=st.sampled_from([1, 1, 1, 2]))
def test_a_reads_events_in_one_pass_are_its_blocks_parsed_one_by_one(
    blocks: list[bytes], gaps: int
) -> None:
    """A read's events, as `SSEBuffer` hands them over (complete, line ends `\\n`): the regex
    pass gives what parsing each block gives, whatever the blocks hold."""
    from thanos_asgi.upstream.framing import data_lines, data_of, parse_block, typed, typed_events

    complete = (b"\n\n" * gaps).join(blocks) + b"\n\n"
    each = [block for block in complete.split(b"\n\n") if block]
    assert typed_events(complete) == [typed(block) for block in each]
    datas = [parse_block(block).data for block in each]
    assert data_of(complete) == datas
    assert data_lines(complete) in (None, datas)


_JSON = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}\\" a\n', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=500)
@given(values=st.lists(_JSON, min_size=1, max_size=5), limit=st.integers(0, 6))
def test_values_one_to_a_line_are_checked_by_their_deepest_line(
    values: list[Any], limit: int
) -> None:
    """`lines_within` bounds each line's nesting, so `one_per_line` refuses what `lines` (the
    whole text's check) refuses, and decodes the same values."""
    data = b"\n".join(msgspec.json.encode(value) for value in values)
    most = max(line.count(b"[") + line.count(b"{") for line in data.split(b"\n"))
    assert sanitize.lines_within(data, limit) == (most <= limit)
    decoder = Decoder(limit=limit)
    try:
        expected = decoder.lines(data)
    except NestingTooDeep:
        with pytest.raises(NestingTooDeep):
            decoder.one_per_line(data)
    else:
        assert decoder.one_per_line(data) == expected


def _recorded_streams(provider: str) -> list[bytes]:
    from tests.cassettes import all_cassettes, load
    from thanos_asgi.upstream.framing import SSEBuffer

    bodies = [
        it.body
        for name in all_cassettes()
        if name.startswith(f"{provider}/")
        for it in load(name)
        if it.status == 200 and b"data:" in it.body
    ]
    return [SSEBuffer().feed(body) for body in bodies]  # each as one read: line ends made \n


@pytest.mark.parametrize(("provider", "pattern"), [("anthropic", "_TYPED"), ("gemini", "_DATA")])
def test_every_recorded_stream_is_read_in_the_one_pass(provider: str, pattern: str) -> None:
    """What providers really send takes the fast path, not the block-by-block fallback (which
    gives the same answer, so only this notices the fast path lost)."""
    from thanos_asgi.upstream import framing

    reads = _recorded_streams(provider)
    assert len(reads) >= 8
    for complete in reads:
        assert framing._whole(getattr(framing, pattern).findall(complete), complete)
        if provider == "gemini":  # one split, and one depth check for the whole read
            assert framing.data_lines(complete) is not None
            assert sanitize.lines_within(complete)
    complete = b'event: ping\ndata: {}\n\nevent: message_stop\ndata: {"a":1}\n\n'
    assert framing._TYPED.findall(complete) == framing.typed_events(complete)
    assert framing.typed_events(complete) == [(b"ping", b"{}"), (b"message_stop", b'{"a":1}')]
    assert framing.data_of(b"data: 1\n\ndata:2\n\n") == [b"1", b"2"]


def _compat() -> Any:
    import httpx

    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import SPECS
    from thanos_asgi.providers.openai_compat import OpenAICompatible
    from thanos_asgi.upstream import HttpxTransport

    config = ProviderConfig(name="compat", kind="openai-compatible", api_key="sk-test-1")
    transport = HttpxTransport(httpx.AsyncClient())  # never sends: only reads are tested
    return OpenAICompatible(config, spec=SPECS["openai-compatible"], transport=transport)


def _chunk(delta: bytes, tail: bytes = b"") -> bytes:
    head = b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    return (
        head + b'"choices":[{"index":0,"delta":' + delta + b',"finish_reason":null}]' + tail + b"}"
    )


_DELTAS = st.sampled_from(
    [
        _chunk(b'{"content":"tok "}'),
        _chunk(b'{"role":"assistant","content":"a\\nb \\"q\\" }\\n\\ndata: {"}'),
        _chunk(b'{"reasoning":"think"}'),
        _chunk(b'{"tool_calls":[{"function":{"name":"f","arguments":""}}]}'),
        _chunk(b'{"tool_calls":[{"function":{"arguments":"{\\"a\\":1}"}}]}'),
        _chunk(b"{}", b',"usage":null'),
        b'{"id":"u","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    ]
)
_ODD = st.sampled_from(
    [b"[DONE]", b'{"a":[', b"1]}", b"{} {}", b"{}", b"", b"{", b"}", b'{"choices":"x"}']
)
_EVENTS = (
    _DELTAS.map(lambda data: b"data: " + data)
    | st.builds(lambda a, b: b"data: " + a + b"\n" + b, _DELTAS | _ODD, _ODD | _DELTAS)
    | _ODD.map(lambda data: b"data: " + data)
    | st.sampled_from([b": ping", b"data:{}", b"event: x\ndata: {}", b" ", b"data: " + b"[" * 200])
)


@settings(derandomize=True, max_examples=1000)
@example(events=[b'data: {"choices":[\n]}', b'data: {"choices":[]}'])  # a value over two lines
@example(events=[b'data: {"choices":[]} {"choices":[]}', b'data: {"choices":[]}'])  # two in one
@example(events=[b"data: " + _chunk(b'{"content":"x"}')] * 3 + [b"data: [DONE]"])
@given(events=st.lists(_EVENTS, min_size=1, max_size=8))
def test_a_translated_reads_chunks_decoded_at_once_are_its_events_read_one_by_one(
    events: list[bytes],
) -> None:
    """An OpenAI-compatible read's leading `data: {...}` events are decoded in one call when
    that call can vouch for each event: the chunks, tool call numbers, usage and end are what
    reading the events one by one gives, whatever the events hold."""
    from thanos_asgi.providers._openai_stream import Read

    adapter = _compat()
    piece = b"\n\n".join(events) + b"\n\n"
    fast, slow = Read(), Read()
    (chunks, end), (expected, expected_end) = (
        fast.at_once(adapter, piece),
        slow._events(adapter, piece, []),
    )
    assert chunks == expected
    assert Read().piece(adapter, piece)[0] == expected  # whichever way the read's size sends it
    assert fast.calls == slow.calls
    if isinstance(end, Exception):
        assert type(end) is type(expected_end) and str(end) == str(expected_end)
    else:
        assert end == expected_end


_ERRORS = st.sampled_from(
    [
        b'data: {"error":{"message":"boom","type":"server_error","code":503}}',
        b'data: {"id":"c","choices":[],"error":null}',
        b'event: error\ndata: {"message":"overloaded"}',
        b'event: error\ndata: {"error":{"message":"rate","code":429}}',
        b'data: {"error":"plain text"}',
    ]
)


@settings(derandomize=True, max_examples=1000)
@example(events=[b"data: " + _chunk(b'{"content":"x"}')] * 7 + [b": ping", b"data: [DONE]"])
@example(events=[b"data: " + _chunk(b'{"content":"x"}')] * 7 + [b'data: {"error":{"code":500}}'])
@given(events=st.lists(_EVENTS | _ERRORS, min_size=1, max_size=10))
def test_a_translated_read_of_the_events_as_they_came_is_the_relays_then_the_read(
    events: list[bytes],
) -> None:
    """A translated read takes the provider's events as they came (`Relayed.raw`): its chunks
    and end are those of the relay's view of them (comments gone, an error ending the
    stream, `[DONE]` last) read as before, whatever the events hold."""
    from thanos_asgi.exceptions import UpstreamError
    from thanos_asgi.providers._openai_stream import DONE, Read, plain_prefix
    from thanos_asgi.providers.base import Relayed

    adapter = _compat()
    piece = b"\n\n".join(events) + b"\n\n"
    chunks, end = Read().piece(adapter, piece)
    cut = plain_prefix(piece)
    try:
        out, sifted = adapter._sift(piece[cut:], Relayed(model="m"), False)
    except UpstreamError:  # unreadable usage: the relay drops the whole read with its error
        assert isinstance(end, UpstreamError)
        return
    relayed = piece[:cut] + out + (DONE if sifted is True else b"")
    expected, expected_end = Read().piece(adapter, relayed)
    if isinstance(sifted, UpstreamError):  # the relay hands on what came before, then raises
        expected_end = sifted if expected_end is False else expected_end
    assert chunks == expected
    if isinstance(end, Exception):
        assert type(end) is type(expected_end) and str(end) == str(expected_end)
    else:
        assert end == expected_end


def test_every_recorded_openai_compatible_stream_is_decoded_at_once() -> None:
    """What OpenAI-compatible servers really send, read as one piece, goes through the one
    decode (and gives the chunks of the event-by-event read)."""
    from thanos_asgi.providers import _openai_stream as stream

    adapter, taken = _compat(), 0
    for provider in ("openai", "deepseek", "groq", "openrouter", "xai"):
        for complete in _recorded_streams(provider):
            if complete.find(b'"error":') >= 0:
                continue  # the relay ends a stream at its error
            piece = complete  # as the relay hands it to a translated read
            plain = stream.uncommented(piece)  # (OpenRouter's keep-alives between events)
            cut = stream.plain_end(plain, stream.first(plain, stream.LOOK))
            if plain[:cut].count(b"\n\ndata: {") < 2:
                continue  # one event is read as it is
            assert stream.plain_chunks(plain[:cut]) is not None, plain[:300]
            fast = stream.Read().at_once(adapter, piece)
            assert fast == stream.Read()._events(adapter, piece, [])
            taken += 1
    assert taken >= 10


_PIECES = st.sampled_from(
    [
        {"content": "tok "},
        {"content": 'a "q" é'},
        {"role": "assistant", "content": ""},
        {"reasoning_content": "hm"},
        {"reasoning_signature": "sig"},
        {"content": "x", "reasoning_content": "y"},
        {"content": "z", "reasoning_signature": "s"},
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}]},
        {"content": "t", "tool_calls": [{"index": 1, "id": "c2", "function": {"arguments": "}"}}]},
        {"refusal": "no"},
        {},
    ]
)
_CHOICES = st.builds(
    lambda delta, index, finish: {"index": index, "delta": delta, "finish_reason": finish},
    _PIECES,
    st.sampled_from([0, 0, 0, 1]),
    st.sampled_from([None, None, "stop", "length", "tool_calls"]),
)


@settings(derandomize=True, max_examples=500)
@given(
    choices=st.lists(st.lists(_CHOICES, max_size=2), min_size=1, max_size=10),
    cut=st.integers(0, 10),
)
def test_the_messages_streams_usual_text_chunk_gives_the_events_of_any_chunk(
    choices: list[list[dict[str, Any]]], cut: int
) -> None:
    """`/v1/messages` streams keep a chunk of more text and write a run of them in one encode;
    the events are those the general path (`add`) writes for the same chunks, in the same
    order, however the chunks came in reads."""
    from thanos_asgi.frontends._anthropic_out import _Events
    from thanos_asgi.types import ChatChunk

    chunks = [msgspec.convert({"id": "c", "model": "m", "choices": c}, ChatChunk) for c in choices]
    fast, general = _Events("m"), _Events("m")
    fast.batch(chunks[:cut])
    out = fast.flush()
    fast.batch(chunks[cut:])
    for chunk in chunks:
        general.add(chunk)
    assert out + fast.flush() == general.flush()
    assert (fast.finish, fast.index, fast.open) == (general.finish, general.index, general.open)


@settings(derandomize=True, max_examples=500)
@given(reads=st.lists(st.lists(st.lists(_CHOICES, max_size=2), max_size=6), min_size=1, max_size=6))
@example(reads=[[[{"delta": {"content": "a"}}], [{"delta": {"content": "x", "reasoning": "y"}}]]])
def test_a_responses_reads_chunks_give_the_events_feed_gives_them_one_by_one(
    reads: list[list[list[dict[str, Any]]]],
) -> None:
    """`Events.batch` writes the usual text chunk itself; the events and the usage are those
    of `feed` for each chunk in turn, whatever the chunks hold."""
    from thanos_asgi import ids
    from thanos_asgi.frontends._responses_out import Events
    from thanos_asgi.frontends._responses_types import ResponseObject
    from thanos_asgi.types import ChatChunk, Usage

    fast, general = (
        Events(ResponseObject(id="resp_1", created_at=1, status="queued", model="m"))
        for _ in range(2)
    )
    random_state = ids._ids.getstate()
    fast_out, general_out = [fast.start()], [general.start()]
    for n, read in enumerate(reads):
        chunks = [msgspec.convert({"id": "c", "model": "m", "choices": c}, ChatChunk) for c in read]
        if chunks and n % 2:
            chunks[-1].usage = Usage(prompt_tokens=n, completion_tokens=1)
        data, used = fast.batch(chunks)
        fast_out.append(data)
        assert used == next((c.usage for c in reversed(chunks) if c.usage is not None), None)
    ids._ids.setstate(random_state)  # the same item ids for the general path
    for read in reads:
        for c in read:
            general_out.append(general.feed(msgspec.convert({"id": "c", "choices": c}, ChatChunk)))
    assert b"".join(fast_out) + fast.end(None) == b"".join(general_out) + general.end(None)


@settings(derandomize=True, max_examples=300)
@given(texts=st.lists(st.text() | st.sampled_from(["a\nb", "\n\ndata: x", "\u2028", '"}\n{'])))
def test_a_reads_chat_chunks_framed_in_one_encode_are_each_chunk_framed(texts: list[str]) -> None:
    """The chat front-end frames a read's chunks with one `encode_lines`: the events are those
    of encoding each chunk on its own, whatever the text holds (line ends included)."""
    from thanos_asgi.frontends.openai import chunk_events
    from thanos_asgi.types import ChatChunk, ChunkChoice, Delta

    encode = msgspec.json.Encoder().encode
    chunks = [ChatChunk(id="c", choices=[ChunkChoice(delta=Delta(content=t))]) for t in texts]
    chunks.append(ChatChunk(id="c", choices=[]))
    assert chunk_events(chunks) == b"".join(b"data: " + encode(c) + b"\n\n" for c in chunks)


@settings(derandomize=True, max_examples=200)
@given(texts=st.lists(st.text(min_size=1), min_size=1, max_size=5), before=st.integers(0, 3))
def test_a_responses_message_closes_with_the_generic_events(texts: list[str], before: int) -> None:
    """A message's three closing events come from one template; they must be those `event`
    writes for them, at any sequence number and output index."""
    from thanos_asgi.frontends._responses_out import Events
    from thanos_asgi.frontends._responses_types import MessageItem, OutputText, ResponseObject

    events = Events(ResponseObject(id="resp_1", created_at=1, status="queued", model="m"))
    events.sequence, events.shell.output = 7 * before, [MessageItem(id="msg_0")] * before
    item = MessageItem(id="msg_a", content=[OutputText(text="")])
    events.open = item
    for text in texts:
        events.pieces.add(text)
    generic = Events(ResponseObject(id="resp_1", created_at=1, status="queued", model="m"))
    generic.sequence = events.sequence
    done = events._close()
    whole = OutputText(text="".join(texts))
    ids = {"item_id": "msg_a", "output_index": before, "content_index": 0}
    closed = MessageItem(id="msg_a", content=[whole])  # status "completed"
    assert done == (
        generic.event("response.output_text.done", text=whole.text, logprobs=[], **ids)
        + generic.event("response.content_part.done", part=whole, **ids)
        + generic.event("response.output_item.done", output_index=before, item=closed)
    )
    assert events.sequence == generic.sequence
    assert events.shell.output[-1] is item and item.status == "completed"


@settings(derandomize=True, max_examples=50)
@given(before=st.integers(0, 3), sequence=st.integers(0, 50))
def test_a_responses_message_opens_with_the_generic_events(before: int, sequence: int) -> None:
    """A message's `output_item.added` and `content_part.added` come from one template; they
    must be those `event` writes for them."""
    from thanos_asgi.frontends._responses_out import Events
    from thanos_asgi.frontends._responses_types import MessageItem, OutputText, ResponseObject

    events, generic = (
        Events(ResponseObject(id="resp_1", created_at=1, status="queued", model="m"))
        for _ in range(2)
    )
    events.shell.output = [MessageItem(id="msg_0")] * before
    events.sequence = generic.sequence = sequence
    item = MessageItem(id="msg_a")
    opened = events._open(item)
    announced = MessageItem(id="msg_a", status="in_progress")  # no content yet
    part = {"type": "output_text", "text": "", "annotations": []}
    ids = {"item_id": "msg_a", "output_index": before, "content_index": 0}
    assert opened == generic.event(
        "response.output_item.added", output_index=before, item=announced
    ) + generic.event("response.content_part.added", part=part, **ids)
    assert events.sequence == generic.sequence and events.open is item
    assert item.content == [OutputText(text="")]


@settings(derandomize=True, max_examples=200)
@given(
    reads=st.lists(
        st.lists(st.text() | st.sampled_from(["a\nb", "\r\n\r\ndata: x", "\u2028", '"},\n{']))
    )
)
def test_gemini_and_ollama_frame_a_read_in_one_encode_as_each_answer_alone(
    reads: list[list[str]],
) -> None:
    """The Gemini dialect's SSE and JSON-array framings and the Ollama dialect's NDJSON each
    frame a read's answers with one `encode_lines`: the bytes are those of framing each answer
    on its own (Gemini: `data: {...}\\r\\n\\r\\n`; items joined by `,\\r\\n` inside `[...]`;
    Ollama: one line each), over a whole stream of reads."""
    from thanos_asgi.frontends import gemini, ollama
    from thanos_asgi.providers.gemini_types import Part

    encode = msgspec.json.Encoder().encode
    sse, array = gemini._SSE(), gemini._Array()
    framed_sse, framed_array, each = [], [], []
    for read in reads:
        answers = [gemini._answer([Part(text=t)], "m", None, None) for t in read]
        framed_sse.append(sse.piece(answers))
        framed_array.append(array.piece(answers))
        each += [encode(a) for a in answers]
    assert b"".join(framed_sse) == b"".join(b"data: " + e + b"\r\n\r\n" for e in each)
    assert b"".join(framed_array) + array.end() == b"[" + b",\r\n".join(each) + b"]"
    shape = ollama._Shape("m", chat=True, started=0.0)
    lines = [shape.line(t, thinking=t or None) for read in reads for t in read]
    assert ollama._encode_lines(lines) == b"".join(encode(line) + b"\n" for line in lines)


_GEMINI_EVENTS = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["", "tok ", "é\n"])), max_size=3),
        st.sampled_from(["", "gemini-2.5-flash", "gemini-2.5-flash-001"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(derandomize=True, max_examples=300)
@given(events=_GEMINI_EVENTS)
def test_a_gemini_streams_text_chunks_carry_the_streams_envelope(
    events: list[tuple[list[tuple[int, str]], str]],
) -> None:
    """`StreamDecoder.feed` builds the usual text chunk inline: each chunk still has the
    stream's id and time, the latest model named, one choice of its candidate's index, its
    text, and the role on that index's first chunk only."""
    from thanos_asgi.providers._gemini_stream import StreamDecoder
    from thanos_asgi.providers.gemini_types import GenerateResponse

    decoder, model, seen = StreamDecoder("asked"), "asked", set()
    for candidates, version in events:
        body = {
            "candidates": [{"index": i, "content": {"parts": [{"text": t}]}} for i, t in candidates]
        }
        event = msgspec.convert(
            {**body, "modelVersion": version, "responseId": "r1"}, GenerateResponse
        )
        model = version or model
        chunks = iter(decoder.feed(event, b"{}"))
        for index, text in candidates:
            if not text:
                continue
            chunk = next(chunks)
            assert (chunk.id, chunk.created, chunk.model) == (decoder.id, decoder.created, model)
            [choice] = chunk.choices
            assert (choice.index, choice.delta.content, choice.finish_reason) == (index, text, None)
            assert choice.delta.role == (None if index in seen else "assistant")
            seen.add(index)
        assert next(chunks, None) is None
