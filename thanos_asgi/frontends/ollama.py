"""The Ollama-native front-end: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, ...

The `ollama` clients, Open WebUI and Continue's Ollama provider, pointed at the gateway, reach
every provider behind it. Requests become canonical (`_ollama_in` lists the mapping); answers
are rebuilt in Ollama's shapes: one JSON object, or NDJSON lines (`application/x-ndjson`) of
text deltas and a last line with `done: true`, `done_reason` and the token counts. Tool calls
are sent whole, in one line, once their arguments are complete (as Ollama does). Errors are
`{"error": "..."}` with the status the gateway chose; after the first line of a stream, an
error is a last `{"error": ...}` line. The client key is `Authorization: Bearer` as on the
OpenAI routes. `/api/ps` lists nothing: the gateway keeps no model in memory.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.core.gateway import Reply, close
from thanos_asgi.exceptions import ThanosError, UpstreamProtocolError
from thanos_asgi.frontends import _ollama_in as decode
from thanos_asgi.frontends._pieces import Calls
from thanos_asgi.frontends.asgi import JSON, read_body, respond
from thanos_asgi.frontends.errors import ollama_error
from thanos_asgi.frontends.sse import EventSourceResponse
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange, ThanosApp

VERSION = "0.12.0"  # the Ollama API level these routes follow (clients gate features on it)
NDJSON = b"application/x-ndjson"
_encode = msgspec.json.Encoder().encode
_encode_lines = msgspec.json.Encoder().encode_lines
_decode = Decoder().decode  # depth-checked (sanitize)


class _Function(msgspec.Struct):
    name: str
    arguments: dict[str, Any]


class _Call(msgspec.Struct):
    function: _Function


class _Message(msgspec.Struct, omit_defaults=True):
    role: str
    content: str
    thinking: str | None = None
    tool_calls: list[_Call] | None = None


class _Line(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    created_at: str
    message: _Message | None = None  # /api/chat
    response: str | None = None  # /api/generate
    thinking: str | None = None  # /api/generate
    done: bool = False
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None


def error_line(exc: ThanosError) -> bytes:
    return ollama_error(exc) + b"\n"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


# -- chat and generate --------------------------------------------------------------------------


async def chat(app: ThanosApp, ex: Exchange) -> None:
    parsed, request = decode.decode_chat(await read_body(ex.scope, ex.receive, app.limit))
    await _answer(app, ex, request, _Shape(parsed.model, True, ex.started))


async def generate(app: ThanosApp, ex: Exchange) -> None:
    parsed, request = decode.decode_generate(await read_body(ex.scope, ex.receive, app.limit))
    await _answer(app, ex, request, _Shape(parsed.model, False, ex.started))


async def _answer(app: ThanosApp, ex: Exchange, request: ChatRequest, shape: _Shape) -> None:
    async with app.dispatch(ex, request) as reply:
        await _deliver(app, ex, reply, shape)


async def _deliver(app: ThanosApp, ex: Exchange, reply: Reply, shape: _Shape) -> None:
    if reply.response is not None:
        reply.finish()
        body = _encode(shape.whole(reply.response))
        await respond(ex.send, 200, body, [*JSON, *app._headers(ex, reply)])
        return
    response = EventSourceResponse(
        _lines(reply, shape),
        headers=app._headers(ex, reply),
        keepalive=None,  # NDJSON has no comment lines
        on_error=error_line,
        on_close=reply.finish,
        on_first_event=reply.first_event_sent,
    )
    response.headers[0] = (b"content-type", NDJSON)
    await response(ex.scope, ex.receive, ex.send)


class _Shape:
    """Builds the lines of one answer: the client's model name, chat or generate."""

    def __init__(self, model: str, chat: bool, started: float) -> None:
        self.model, self.chat, self.started = model, chat, started

    def line(self, text: str = "", thinking: str | None = None, **kw: Any) -> _Line:
        if self.chat:
            calls = kw.pop("calls", None)
            message = _Message("assistant", text, thinking=thinking, tool_calls=calls)
            return _Line(model=self.model, created_at=_now(), message=message, **kw)
        kw.pop("calls", None)
        return _Line(model=self.model, created_at=_now(), response=text, thinking=thinking, **kw)

    def last(self, reason: str | None, usage: Usage | None, **kw: Any) -> _Line:
        elapsed = int((time.perf_counter() - self.started) * 1e9)
        return self.line(
            done=True,
            done_reason=_reason(reason),
            total_duration=elapsed,
            load_duration=0,
            prompt_eval_count=usage.prompt_tokens if usage else 0,
            eval_count=usage.output_tokens if usage else 0,
            **kw,
        )

    def whole(self, response: ChatResponse) -> _Line:
        choice = response.choices[0] if response.choices else None
        message = choice.message if choice else None
        thinking = (message.reasoning_content or message.reasoning) if message else None
        calls = _calls(message.tool_calls) if message and message.tool_calls else None
        text = (message.content or "") if message else ""
        reason = choice.finish_reason if choice else None
        return self.last(reason, response.usage, text=text, thinking=thinking, calls=calls)


def _reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"  # Ollama says "stop" after tool calls


async def _lines(reply: Reply, shape: _Shape) -> AsyncIterator[bytes]:
    assert reply.batches is not None
    calls = Calls()
    reason: str | None = None
    try:
        async for batch in reply.batches:  # the lines of one upstream read as one piece
            lines = []
            for chunk in batch:
                if chunk.usage is not None:
                    reply.usage = chunk.usage
                line, reason = _delta(chunk, shape, calls, reason)
                if line is not None:
                    lines.append(line)
            if lines:
                yield _encode_lines(lines)  # NDJSON in one encode
    finally:
        await close(reply.batches)
    done = _calls_done(calls)
    yield _encode(shape.last(reason, reply.usage, calls=done)) + b"\n"


def _delta(
    chunk: ChatChunk, shape: _Shape, calls: Calls, reason: str | None
) -> tuple[_Line | None, str | None]:
    if not chunk.choices:
        return None, reason
    choice = chunk.choices[0]
    delta = choice.delta
    for call in delta.tool_calls or ():
        calls.add(call)
    text, thinking = delta.content, delta.reasoning_content or delta.reasoning
    line = None
    if text or thinking:
        line = shape.line(text or "", thinking or None)
    return line, choice.finish_reason or reason


def _calls_done(calls: Calls) -> list[_Call] | None:
    if not calls:
        return None
    return [_Call(_Function(name, _arguments(text))) for name, text in calls.whole()]


def _calls(calls: list[ToolCall]) -> list[_Call]:
    return [_Call(_Function(c.function.name, _arguments(c.function.arguments))) for c in calls]


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = _decode(text) if text.strip() else {}
    except msgspec.DecodeError:
        raise UpstreamProtocolError(
            "the provider sent tool-call arguments that are not JSON"
        ) from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("the provider sent tool-call arguments that are not an object")
    return value


# -- embeddings, models, version ------------------------------------------------------------


class _Embedded(msgspec.Struct):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class _Legacy(msgspec.Struct):
    embedding: list[float]


async def embed(app: ThanosApp, ex: Exchange) -> None:
    request = decode.decode_embed(await read_body(ex.scope, ex.receive, app.limit))
    response = await app.gateway.embed(request, ex.context())
    vectors = [item.embedding for item in response.data if isinstance(item.embedding, list)]
    elapsed = int((time.perf_counter() - ex.started) * 1e9)
    tokens = response.usage.prompt_tokens
    await respond(ex.send, 200, _encode(_Embedded(request.model, vectors, elapsed, 0, tokens)))


async def embeddings(app: ThanosApp, ex: Exchange) -> None:
    """The legacy `/api/embeddings`: one `prompt`, one `embedding`."""
    body = await read_body(ex.scope, ex.receive, app.limit)
    response = await app.gateway.embed(decode.decode_embed(body, legacy=True), ex.context())
    first = response.data[0].embedding if response.data else []
    await respond(ex.send, 200, _encode(_Legacy(first if isinstance(first, list) else [])))


class _Details(msgspec.Struct):
    format: str
    family: str
    families: list[str]
    parameter_size: str = ""
    quantization_level: str = ""
    parent_model: str = ""


class _Tag(msgspec.Struct):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: _Details


class _Tags(msgspec.Struct):
    models: list[_Tag]


def _details(owner: str) -> _Details:
    return _Details(format="gateway", family=owner, families=[owner])


async def tags(app: ThanosApp, ex: Exchange) -> None:
    """`GET /api/tags`: every model the gateway can route to, as Ollama lists local models."""
    stamp = datetime.datetime.fromtimestamp(0, datetime.UTC).isoformat().replace("+00:00", "Z")
    models = [
        _Tag(m.id, m.id, stamp, 0, hashlib.sha256(m.id.encode()).hexdigest(), _details(m.owned_by))
        for m in await app.gateway.models()
    ]
    await respond(ex.send, 200, _encode(_Tags(models)))


class _Show(msgspec.Struct):
    modelfile: str
    parameters: str
    template: str
    details: _Details
    model_info: dict[str, Any]
    capabilities: list[str]


async def show(app: ThanosApp, ex: Exchange) -> None:
    """`POST /api/show`: what is known of one model (404 when the gateway cannot route it)."""
    name = decode.model_of(await read_body(ex.scope, ex.receive, app.limit))
    info = app.gateway.model_info(name)
    show = _Show("", "", "", _details(info.owned_by), {}, ["completion", "tools"])
    await respond(ex.send, 200, _encode(show))


async def version(app: ThanosApp, ex: Exchange) -> None:
    await respond(ex.send, 200, _encode({"version": VERSION}))


async def running(app: ThanosApp, ex: Exchange) -> None:
    """`GET /api/ps`: nothing is loaded in the gateway's memory."""
    await respond(ex.send, 200, b'{"models":[]}')
