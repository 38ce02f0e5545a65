"""A request that fails leaves no reference cycles either. An exception keeps the frames it
passed through, and a frame that keeps the exception (`last = exc`, an error kept on the
connection it came from) closes a cycle that holds the whole request, its body included,
until the collector runs. `thanos serve` collects rarely (tests/test_garbage.py), so a provider
failing every request, or a client sending what is refused, must not leave requests behind:
each of these cases left ~70-90 objects a request before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import post_scope
from tests.rawserver import answer, chunk, read_request, serving
from tests.test_garbage import cyclic_garbage, post
from tests.upstreams import completion, stream_body
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import parse_config
from thanos_asgi.frontends.asgi import ASGIApp, Message

pytestmark = pytest.mark.anyio

Writer = asyncio.StreamWriter
Reply = Callable[[Writer, dict[str, Any]], Awaitable[None]]
HI = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def status_500(writer: Writer, body: dict[str, Any]) -> None:
    writer.write(answer(b'{"error": {"message": "boom"}}', status=b"500 Internal Server Error"))


async def status_400(writer: Writer, body: dict[str, Any]) -> None:
    writer.write(answer(b'{"error": {"message": "bad"}}', status=b"400 Bad Request"))


async def not_json(writer: Writer, body: dict[str, Any]) -> None:
    writer.write(answer(b"<html>oops</html>"))


async def cut_short(writer: Writer, body: dict[str, Any]) -> None:
    """The head and part of the body, then the connection closes."""
    if body.get("stream"):
        sse = stream_body("m", "one two three", True)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunk(sse[: len(sse) // 2])
        )
    else:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
        writer.write(b'content-length: 100\r\n\r\n{"id":')
    await writer.drain()
    writer.close()


FIRST_EVENTS = {  # a stream's first text, by the provider's wire format
    "anthropic": (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
        b'"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    ),
    "gemini": (
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},'
        b'"index":0}],"modelVersion":"m"}\n\n'
    ),
    "openai": (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}\n\n'
    ),
    "responses": (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
        b'"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress",'
        b'"model":"m","output":[]}}\n\n'
    ),
}


WHOLE = {  # a whole answer, by the provider's wire format
    "anthropic": (
        b'{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":'
        b'"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":1,'
        b'"output_tokens":1}}'
    ),
    "gemini": (
        b'{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":'
        b'"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1,'
        b'"totalTokenCount":2},"modelVersion":"m"}'
    ),
    "openai": json.dumps(completion("m", "hi")).encode(),
    "responses": (
        b'{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m",'
        b'"output":[{"type":"message","id":"msg_1","role":"assistant","status":"completed",'
        b'"content":[{"type":"output_text","text":"hi","annotations":[]}]}],'
        b'"usage":{"input_tokens":1,"output_tokens":1,"total_tokens":2}}'
    ),
}


async def error_event(writer: Writer, body: dict[str, Any]) -> None:
    """A stream's first text, then (in a read of its own) an error reported inside the
    stream, in a form every adapter reads as one."""
    kind = body["_wire"]
    if not body.get("stream"):  # (answered: failures would open the circuit before the stream)
        writer.write(answer(WHOLE[kind]))
        return
    error = {"type": "invalid_request_error", "code": 400, "message": "refused"}
    event = b"event: error\ndata: " + json.dumps({"type": "error", "error": error}).encode()
    if kind == "responses":
        event = b'event: error\ndata: {"type":"error","code":"server_error","message":"refused"}'
    if kind == "gemini":  # (its errors come as a plain `data:` line)
        error = {"code": 400, "message": "refused", "status": "INVALID_ARGUMENT"}
        event = b"data: " + json.dumps({"error": error}).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + chunk(FIRST_EVENTS[kind])
    )
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(chunk(event + b"\n\n") + b"0\r\n\r\n")


async def closed_at_once(writer: Writer, body: dict[str, Any]) -> None:
    writer.close()


async def too_slow(writer: Writer, body: dict[str, Any]) -> None:
    await asyncio.sleep(0.5)  # past the 50 ms request timeout


async def streaming(writer: Writer, body: dict[str, Any]) -> None:
    """A stream's first events, then nothing for a while (the client leaves meanwhile)."""
    sse = stream_body("m", "one two three", True)
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + chunk(sse[: len(sse) // 2])
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(chunk(sse[len(sse) // 2 :]) + b"0\r\n\r\n")


def provider(reply: Reply) -> Callable[[asyncio.StreamReader, Writer], Awaitable[None]]:
    """A provider answering every request with `reply`, which finds the wire format the
    request was sent in under `body["_wire"]` (and `"stream": true` for a Gemini stream, which
    says so in its URL)."""

    async def handler(reader: asyncio.StreamReader, writer: Writer) -> None:
        while not writer.is_closing():
            head, raw = (await read_request(reader)).split(b"\r\n\r\n", 1)
            body = json.loads(raw)
            head = head.lower()
            body["_wire"] = (
                "anthropic"
                if b"anthropic-version" in head
                else "gemini"
                if b"generatecontent" in head
                else "responses"
                if head.startswith(b"post /v1/responses ")
                else "openai"
            )
            if b":streamgeneratecontent" in head:
                body["stream"] = True
            await reply(writer, body)
            await writer.drain()

    return handler


BASES = {"openai-compatible": "/v1", "anthropic": "", "gemini": "/v1beta", "openai": "/v1"}
WIRES = {"openai": 'wire_api = "responses"\n'}  # (relays the Responses API as it is)
CLIENTS = {  # front-end: its route and a request in its dialect
    "chat": ("/v1/chat/completions", HI),
    "messages": ("/v1/messages", {**HI, "max_tokens": 16}),
    "responses": ("/v1/responses", {"model": "m", "input": "hi"}),
}


@asynccontextmanager
async def gateway_at(
    reply: Reply, tmp_path: Path, kind: str = "openai-compatible", client: str = "chat"
) -> AsyncIterator[ASGIApp]:
    """The app, in front of a `kind` provider answering every request with `reply`, warmed
    with a whole answer and a stream from `client`."""
    async with serving(provider(reply)) as server:
        base = server.url.removesuffix("/v1/chat") + BASES[kind]
        text = (
            f'[providers.up]\nkind = "{kind}"\nbase_url = "{base}"\nmodels = ["m"]\n'
            f'api_key = "k"\n{WIRES.get(kind, "")}'
            "[routing]\nrequest_timeout_ms = 50\nmax_retries = 1\nretry_backoff_ms = 1\n"
            f'[cost]\nledger_path = "{tmp_path / "usage.db"}"\n'
            f'[responses]\nstore_path = "{tmp_path / "responses.db"}"\n'
        )
        gateway = Gateway(parse_config(text, source="test.toml", env={}))
        app = build_app(gateway)
        route, body = CLIENTS[client]
        async with gateway:
            for warm in (body, {**body, "stream": True}):
                await post(app, warm, route)  # connections, caches, lazily built parts
            yield app


@pytest.mark.parametrize(
    "reply",
    [status_500, status_400, not_json, cut_short, error_event, closed_at_once, too_slow],
    ids=["500", "400", "not-json", "cut-short", "error-event", "closed", "timeout"],
)
async def test_a_failing_provider_leaves_no_cycles(tmp_path: Path, reply: Reply) -> None:
    """Retried, then answered with an error (or a stream ended with one)."""
    async with gateway_at(reply, tmp_path) as app:
        with cyclic_garbage() as found:
            for body in (HI, {**HI, "stream": True}):
                status, sent = await post(app, body)
                assert status >= 400 or b'"error"' in sent or reply is error_event
        assert sorted({type(o).__qualname__ for o in found}) == []


@pytest.mark.parametrize(
    "reply", [status_500, cut_short, error_event, too_slow], ids=["500", "cut", "error", "slow"]
)
@pytest.mark.parametrize(
    ("client", "kind"),
    [
        ("chat", "anthropic"),
        ("chat", "gemini"),
        ("messages", "openai-compatible"),
        ("responses", "openai-compatible"),
        ("responses", "openai"),  # relayed
    ],
)
async def test_every_translation_failing_leaves_no_cycles(
    tmp_path: Path, client: str, kind: str, reply: Reply
) -> None:
    """The same through the other front-ends and the translating provider adapters."""
    route, body = CLIENTS[client]
    async with gateway_at(reply, tmp_path, kind, client) as app:
        with cyclic_garbage() as found:
            for sent_body in (body, {**body, "stream": True}):
                status, sent = await post(app, sent_body, route)
                assert status >= 400 or b"error" in sent or reply is error_event
        assert sorted({type(o).__qualname__ for o in found}) == []


async def test_refused_requests_leave_no_cycles(tmp_path: Path) -> None:
    """Refused before any provider is asked: malformed, invalid, an unknown model."""
    refused = [b"{", b'{"model": "m"}', json.dumps({**HI, "model": "nope"}).encode()]
    async with gateway_at(status_500, tmp_path) as app:
        with cyclic_garbage() as found:
            for raw in refused:
                assert await status_of(app, raw) in (400, 404, 422)
        assert sorted({type(o).__qualname__ for o in found}) == []


async def test_refused_clients_leave_no_cycles(tmp_path: Path) -> None:
    """What a hostile client is answered most: a wrong key (401), a key past its requests a
    minute (429), a model its key may not use (403), a body over the limit (413)."""
    async with serving(provider(status_500)) as server:
        text = (
            f'[providers.up]\nkind = "openai-compatible"\nbase_url = "{server.url[:-5]}"\n'
            'models = ["m", "other"]\n[server]\nmax_body_bytes = 4096\n'
            '[[server.keys]]\nid = "k"\nkey = "sk-right"\nrpm = 3\nmodels = ["m"]\n'
            f'[cost]\nledger_path = "{tmp_path / "usage.db"}"\n'
        )
        gateway = Gateway(parse_config(text, source="test.toml", env={}))
        app = build_app(gateway)
        other = json.dumps({**HI, "model": "other"}).encode()
        asks = [
            (b"sk-wrong", json.dumps(HI).encode()),
            (b"sk-right", json.dumps(HI).encode()),  # (the provider fails it)
            (b"sk-right", other),
            (b"sk-right", b" " * 8192),  # the key's third request this minute
            (b"sk-right", json.dumps(HI).encode()),
        ]
        async with gateway:
            await status_of(app, *asks[0])  # warm
            with cyclic_garbage() as found:
                statuses = [await status_of(app, raw, key) for key, raw in asks]
            assert [statuses[0], *statuses[2:]] == [401, 403, 413, 429]
            assert sorted({type(o).__qualname__ for o in found}) == []


async def status_of(app: ASGIApp, raw: bytes, key: bytes = b"") -> int:
    pending: list[Message] = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # (the client stays until it is answered)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = post_scope("/v1/chat/completions", raw)
    if key:
        scope["headers"].append((b"authorization", b"Bearer " + key))
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_a_client_leaving_mid_stream_leaves_no_cycles(tmp_path: Path) -> None:
    """The client disconnects after the first events: the stream is cancelled."""
    async with gateway_at(streaming, tmp_path) as app:
        with cyclic_garbage() as found:
            for _ in range(2):
                assert await leave_after_first_event(app, {**HI, "stream": True})
        assert sorted({type(o).__qualname__ for o in found}) == []


async def leave_after_first_event(app: ASGIApp, body: dict[str, Any]) -> bool:
    raw = json.dumps(body).encode()
    pending: list[Message] = [{"type": "http.request", "body": raw, "more_body": False}]
    first = asyncio.Event()

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await first.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message.get("body"):
            first.set()

    await asyncio.wait_for(app(post_scope("/v1/chat/completions", raw), receive, send), 5)
    return first.is_set()
