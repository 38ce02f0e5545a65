"""Translated streams write once per upstream read: a read holding many events goes to the
client as one piece, an event split across reads waits for its end, and either way every event
arrives once, in order. A raw loopback provider decides exactly how its stream is cut."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from tests.helpers import post_scope
from tests.rawserver import Handler, chunk, read_request, serving
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import parse_config
from thanos_asgi.providers.batches import Batching
from thanos_asgi.providers.gemini import Gemini
from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.providers.openai_responses import ResponsesWire, responses_wire
from thanos_asgi.providers.vertex import Vertex
from thanos_asgi.types import ChatChunk, ChatRequest

pytestmark = pytest.mark.anyio
WORDS = [f"w{n} " for n in range(30)]
HI = [{"role": "user", "content": "hi"}]


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _typed(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + _json(data) + b"\n\n"


def chat_events() -> list[bytes]:
    def event(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + _json(body) + b"\n\n"

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": word}) for word in WORDS]
    events.append(event({}, "stop"))
    usage = {"prompt_tokens": 3, "completion_tokens": 30, "total_tokens": 33}
    return [*events, event({}, usage=usage), b"data: [DONE]\n\n"]


def anthropic_events() -> list[bytes]:
    usage = {"input_tokens": 3, "output_tokens": 1}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "usage": usage,
    }
    events = [
        _typed({"type": "message_start", "message": message}),
        _typed(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        b'event: ping\ndata: {"type":"ping"}\n\n',
    ]
    events += [
        _typed(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": word},
            }
        )
        for word in WORDS
    ]
    return [
        *events,
        _typed({"type": "content_block_stop", "index": 0}),
        _typed(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 30},
            }
        ),
        _typed({"type": "message_stop"}),
    ]


def gemini_events() -> list[bytes]:
    def event(text: str, finish: bool) -> bytes:
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 3, "candidatesTokenCount": 30, "totalTokenCount": 33}
        body = {"candidates": [candidate], "usageMetadata": usage, "responseId": "r1"}
        return b"data: " + _json(body) + b"\r\n\r\n"  # Gemini ends its lines with \r\n

    return [event(word, n == len(WORDS) - 1) for n, word in enumerate(WORDS)]


def responses_events() -> list[bytes]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress",
               "content": []}  # fmt: skip
    shell = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m",
             "status": "in_progress", "output": []}  # fmt: skip
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": message},
        {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": ""}},
        *({"type": "response.output_text.delta", **ids, "delta": word} for word in WORDS),
        {"type": "response.output_text.done", **ids, "text": "".join(WORDS)},
    ]
    text = {"type": "output_text", "text": "".join(WORDS), "annotations": []}
    done = {**message, "status": "completed", "content": [text]}
    usage = {"input_tokens": 3, "output_tokens": 30, "total_tokens": 33}
    final = {**shell, "status": "completed", "output": [done], "usage": usage}
    events.append({"type": "response.completed", "response": final})
    return [_typed({**event, "sequence_number": n}) for n, event in enumerate(events)]


def cut(events: list[bytes]) -> list[bytes]:
    """The stream as three reads: the first 12 events and half of the 13th; the rest of
    it, one more event and the first byte of the next; everything else."""
    whole = b"".join(events)
    first = len(b"".join(events[:12])) + len(events[12]) // 2
    second = len(b"".join(events[:14])) + 1
    return [whole[:first], whole[first:second], whole[second:]]


def upstream(events: list[bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        for piece in cut(events):
            writer.write(chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.05)  # a read of its own
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the gateway hangs up

    return handler


@asynccontextmanager
async def gateway(kind: str, events: list[bytes], extra: str = "") -> AsyncIterator[Gateway]:
    async with serving(upstream(events)) as server:
        base = server.url.removesuffix("/v1/chat") + ("/v1beta" if kind == "gemini" else "/v1")
        text = (
            f'[providers.p]\nkind = "{kind}"\nbase_url = "{base}"\napi_key = "k"\n'
            'models = ["m"]\ntimeout_ms = 5000\n' + extra
        )
        gw = Gateway(parse_config(text, source="reads.toml", env={}))
        try:
            yield gw
        finally:
            await gw.aclose()


async def call(
    gw: Gateway, path: str, body: dict[str, Any], query: bytes = b"", leave: bool = False
) -> list[bytes]:
    """The body pieces the app sends, one per ASGI message (the gateway's writes); with
    `leave`, the client goes away after the first (its next send fails, as a server's does)."""
    data = _json(body)
    scope = post_scope(path, data, query)
    requests = [{"type": "http.request", "body": data, "more_body": False}]
    pieces: list[bytes] = []
    status = 0

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message.get("body"):
            if leave and pieces:
                raise OSError("the client has gone")
            pieces.append(message["body"])

    with contextlib.suppress(OSError) if leave else contextlib.nullcontext():
        await build_app(gw)(scope, receive, send)
    assert status == 200, b"".join(pieces)
    return pieces


def parse(pieces: list[bytes]) -> list[tuple[str, Any]]:
    """Each SSE event the client got: (its `event:` name or "", its data as JSON or text)."""
    events = []
    for block in b"".join(pieces).decode().split("\n\n"):
        if not block:
            continue
        name, data = "", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def texts(events: list[tuple[str, Any]], pick: Callable[[str, Any], str | None]) -> list[str]:
    return [text for name, data in events if (text := pick(name, data)) is not None]


def chat_text(name: str, data: Any) -> str | None:
    if data == "[DONE]" or not data["choices"]:
        return None
    content: str | None = data["choices"][0]["delta"].get("content")
    return content or None


def check_pieces(pieces: list[bytes], events: list[tuple[str, Any]]) -> None:
    assert all(piece.endswith(b"\n\n") for piece in pieces)  # never half an event
    assert len(pieces) <= 6 < len(events)  # a write per read, not per event


@pytest.mark.parametrize(
    ("kind", "events", "extra"),
    [
        ("anthropic", anthropic_events, ""),
        ("gemini", gemini_events, ""),
        ("openai-compatible", responses_events, 'wire_api = "responses"\n'),
    ],
    ids=["anthropic", "gemini", "responses-wire"],
)
async def test_a_chat_client_gets_every_event_in_order_a_write_per_read(
    kind: str, events: Callable[[], list[bytes]], extra: str
) -> None:
    body = {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    async with gateway(kind, events(), extra) as gw:
        pieces = await call(gw, "/v1/chat/completions", body)
    got = parse(pieces)
    assert texts(got, chat_text) == WORDS
    assert got[-1] == ("", "[DONE]")
    assert got[-2][1]["usage"]["completion_tokens"] == 30
    assert [data["choices"][0]["finish_reason"] for _, data in got[:-1] if data["choices"]][
        -1
    ] == "stop"
    check_pieces(pieces, got)


async def test_a_messages_client_gets_every_event_in_order_a_write_per_read() -> None:
    body = {"model": "m", "max_tokens": 50, "messages": HI, "stream": True}
    async with gateway("openai-compatible", chat_events()) as gw:
        pieces = await call(gw, "/v1/messages", body)
    got = parse(pieces)

    def text(name: str, data: Any) -> str | None:
        return data["delta"]["text"] if name == "content_block_delta" else None

    assert texts(got, text) == WORDS
    names = [name for name, _ in got]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert got[-2][1]["usage"]["output_tokens"] == 30
    check_pieces(pieces, got)


async def test_a_responses_client_gets_every_event_in_order_a_write_per_read() -> None:
    body = {"model": "m", "input": "hi", "stream": True, "store": False}
    async with gateway("openai-compatible", chat_events()) as gw:
        pieces = await call(gw, "/v1/responses", body)
    got = parse(pieces)

    def text(name: str, data: Any) -> str | None:
        return data["delta"] if name == "response.output_text.delta" else None

    assert texts(got, text) == WORDS
    assert [data["sequence_number"] for _, data in got] == list(range(len(got)))
    added = [data["item"] for name, data in got if name == "response.output_item.added"]
    assert [(item["type"], item["status"], item["content"]) for item in added] == [
        ("message", "in_progress", [])
    ]  # as OpenAI announces a message; the done event completes it
    assert got[-1][0] == "response.completed"
    assert got[-1][1]["response"]["output"][0]["content"][0]["text"] == "".join(WORDS)
    assert got[-1][1]["response"]["usage"]["output_tokens"] == 30
    check_pieces(pieces, got)


@pytest.mark.parametrize("sse", [True, False], ids=["alt=sse", "json-array"])
async def test_a_gemini_client_gets_every_answer_in_order_a_write_per_read(sse: bool) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path = "/v1beta/models/m:streamGenerateContent"
    async with gateway("openai-compatible", chat_events()) as gw:
        pieces = await call(gw, path, body, b"alt=sse" if sse else b"")
    whole = b"".join(pieces)
    if sse:
        assert all(piece.endswith(b"\r\n\r\n") for piece in pieces)  # never half an event
        answers = [json.loads(block[6:]) for block in whole.split(b"\r\n\r\n") if block]
    else:
        answers = json.loads(whole)  # one JSON array, whatever the writes
    words = [
        part["text"]
        for answer in answers
        for part in answer["candidates"][0].get("content", {}).get("parts", [])
        if "text" in part
    ]
    assert words == WORDS
    assert answers[-1]["candidates"][0]["finishReason"] == "STOP"
    assert answers[-1]["usageMetadata"]["candidatesTokenCount"] == 30
    assert len(pieces) <= 6 < len(answers)  # a write per read, not per answer


def test_an_adapter_overriding_open_stream_only_is_read_through_it() -> None:
    """Built on an adapter that batches, a class with its own `open_stream` gets the default
    `open_batches` (a list per chunk of that stream), never the parent's reader."""

    class Own(OpenAICompatible):
        async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
            raise NotImplementedError

    class Later(Own):  # the override is inherited: still its own stream
        pass

    assert OpenAICompatible.open_batches is not Batching.open_batches
    assert Own.open_batches is Batching.open_batches
    assert Later.open_batches is Batching.open_batches
    assert responses_wire(OpenAICompatible).open_batches is ResponsesWire.open_batches  # its own
    assert Vertex.open_batches is Gemini.open_batches is not Batching.open_batches


@pytest.mark.parametrize("sse", [True, False], ids=["alt=sse", "json-array"])
async def test_a_gemini_stream_that_fails_before_its_first_answer_stays_well_formed(
    sse: bool,
) -> None:
    """The provider's first event is unreadable: the client still gets a body in its framing
    (one JSON array holding the error, or one SSE error event), never `,{error}]`."""
    async with gateway("openai-compatible", [b"data: {not json\n\n", *chat_events()]) as gw:
        pieces = await call(
            gw, "/v1beta/models/m:streamGenerateContent", {"contents": [
                {"role": "user", "parts": [{"text": "hi"}]}]}, b"alt=sse" if sse else b""
        )  # fmt: skip
    whole = b"".join(pieces)
    if sse:
        (block,) = [block for block in whole.split(b"\r\n\r\n") if block]
        assert json.loads(block.removeprefix(b"data: "))["error"]["code"] >= 500
    else:
        (item,) = json.loads(whole)
        assert item["error"]["code"] >= 500


@contextmanager
def dropped_generators() -> Iterator[list[str]]:
    """The async generators first iterated inside this block and dropped unfinished. asyncio
    closes each of those in a task of its own, woken through its self-pipe, and the upstream
    response such a generator holds stays open until that task runs."""
    hooks = sys.get_asyncgen_hooks()
    names: list[str] = []

    def finalizer(generator: Any) -> None:
        names.append(generator.ag_code.co_qualname)
        if hooks.finalizer is not None:
            hooks.finalizer(generator)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        yield names
    finally:
        sys.set_asyncgen_hooks(*hooks)


GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CHAT_BODY = {"model": "m", "messages": HI, "stream": True}
PATHS_BY_CLIENT: dict[
    str, tuple[str, dict[str, Any], bytes, Any]
] = {  # client path, body, query -> (provider kind, its events, provider config)
    "chat->openai-compatible": ("/v1/chat/completions", CHAT_BODY, b"", None),
    "chat->anthropic": ("/v1/chat/completions", CHAT_BODY, b"", ("anthropic", anthropic_events)),
    "chat->gemini": ("/v1/chat/completions", CHAT_BODY, b"", ("gemini", gemini_events)),
    "chat->responses-wire": ("/v1/chat/completions", CHAT_BODY, b"", ("responses", None)),
    "messages": ("/v1/messages", {**CHAT_BODY, "max_tokens": 50}, b"", None),
    "responses": ("/v1/responses", {"model": "m", "input": "hi", "stream": True}, b"", None),
    "responses->responses-wire (relay)": (
        "/v1/responses",
        {"model": "m", "input": "hi", "stream": True},
        b"",
        ("responses", None),
    ),
    "gemini-sse": ("/v1beta/models/m:streamGenerateContent", GEMINI_BODY, b"alt=sse", None),
    "gemini-array": ("/v1beta/models/m:streamGenerateContent", GEMINI_BODY, b"", None),
    "ollama": ("/api/chat", {"model": "m", "messages": HI}, b"", None),
}


@pytest.mark.parametrize("leave", [False, True], ids=["finished", "client-left"])
@pytest.mark.parametrize("name", list(PATHS_BY_CLIENT))
async def test_a_stream_leaves_no_generator_for_the_loop_to_close(name: str, leave: bool) -> None:
    """Every layer of a stream is closed by the time it ends, or then and there when the
    client leaves after its first piece: none is left for the event loop to close later (a
    task, a self-pipe wake-up, and the upstream connection held meanwhile)."""
    path, body, query, provider = PATHS_BY_CLIENT[name]
    kind, events, extra = "openai-compatible", chat_events, ""
    if provider is not None and provider[0] == "responses":
        events, extra = responses_events, 'wire_api = "responses"\n'
    elif provider is not None:
        kind, events = provider[0], provider[1] or events
    async with gateway(kind, events(), extra) as gw:
        with dropped_generators() as dropped:
            pieces = await call(gw, path, body, query, leave=leave)
            gc.collect()
    if leave:
        assert len(pieces) == 1
    else:
        assert b"w29" in b"".join(pieces)
    assert dropped == []
