"""The Gemini-native front-end: `/v1beta/models/{model}:generateContent` and friends.

`google-genai` (and anything else speaking the Gemini API) reaches every provider behind the
gateway: requests become canonical (`_gemini_in` lists the mapping), answers come back as
`GenerateContentResponse`s; streams (`:streamGenerateContent`) as SSE with `?alt=sse`, else
as one JSON array written piece by piece, as Google does. Tool calls are sent whole, in one
event, once their arguments are complete. The client key is `x-goog-api-key` or `?key=`
(also `Authorization: Bearer`). Errors are Google's `{"error": {"code", "message",
"status"}}`; after the first event, an error is a last event of that shape.

`:countTokens` is an estimate (the one budgets reserve by), never a provider call.
`:embedContent` and `:batchEmbedContents` go to the model's embeddings endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import msgspec

from thanos_asgi.core.gateway import Reply, close
from thanos_asgi.exceptions import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ThanosError,
    UpstreamProtocolError,
)
from thanos_asgi.frontends import _gemini_in as decode
from thanos_asgi.frontends._pieces import Calls
from thanos_asgi.frontends.asgi import JSON, read_body, respond, route_path
from thanos_asgi.frontends.errors import gemini_error
from thanos_asgi.frontends.openai import convert, decode_json
from thanos_asgi.frontends.sse import EventSourceResponse, joined
from thanos_asgi.governance.pricing import estimate_prompt_tokens
from thanos_asgi.providers.gemini_types import (
    Candidate,
    Content,
    GenerateResponse,
    GFunctionCall,
    Part,
    UsageMetadata,
)
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import ChatChunk, ChatResponse, EmbeddingRequest, ModelInfo, Usage

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange, ThanosApp

PREFIX = "/v1beta/models"
_encode = msgspec.json.Encoder().encode
_decode = Decoder().decode  # depth-checked (sanitize)
_FINISH = {"length": "MAX_TOKENS", "content_filter": "SAFETY", "error": "OTHER"}
_METHODS = ["generateContent", "streamGenerateContent", "countTokens", "embedContent"]


async def handle(app: ThanosApp, ex: Exchange) -> None:
    """Everything under `/v1beta/models`: the model list, one model, or `{model}:{method}`."""
    rest = unquote(route_path(ex.scope)[len(PREFIX) :].lstrip("/")).removeprefix("models/")
    model, _, method = rest.rpartition(":")
    verb = ex.scope["method"]
    if method not in _ACTIONS and verb == "GET":  # a model name with a tag: `llama3:8b`
        model, method = rest, ""
    if not method:
        if verb != "GET":
            raise MethodNotAllowed(f"{PREFIX} does not accept {verb}")
        await (_model(app, ex, model) if model else _models(app, ex))
        return
    handler = _ACTIONS.get(method)
    if handler is None:
        raise NotFound(f"there is no Gemini method {method[:60]!r} here")
    if verb != "POST":
        raise MethodNotAllowed(f":{method} takes POST")
    await handler(app, ex, model)


# -- generateContent ----------------------------------------------------------------------------


async def _generate(app: ThanosApp, ex: Exchange, model: str) -> None:
    body = await read_body(ex.scope, ex.receive, app.limit)
    async with app.dispatch(ex, decode.decode_generate(body, model, stream=False)) as reply:
        if reply.response is None:
            raise UpstreamProtocolError("the provider streamed where a whole answer was asked for")
        reply.finish()
        answer = whole(reply.response, model)
        await respond(ex.send, 200, _encode(answer), [*JSON, *app._headers(ex, reply)])


async def _stream(app: ThanosApp, ex: Exchange, model: str) -> None:
    body = await read_body(ex.scope, ex.receive, app.limit)
    request = decode.decode_generate(body, model, stream=True)
    sse = "sse" in parse_qs(ex.scope.get("query_string", b"").decode("latin-1")).get("alt", [])
    async with app.dispatch(ex, request) as reply:
        await _send_stream(ex, app._headers(ex, reply), reply, model, sse)


async def _send_stream(
    ex: Exchange, headers: list[tuple[bytes, bytes]], reply: Reply, model: str, sse: bool
) -> None:
    framing: _SSE | _Array = _SSE() if sse else _Array()
    response = EventSourceResponse(
        _pieces(reply, model, framing),
        headers=headers,
        keepalive=None,  # neither framing has room for comments
        on_error=framing.error,
        on_close=reply.finish,
        on_first_event=reply.first_event_sent,
    )
    if not sse:
        response.headers[0] = (b"content-type", b"application/json")
    await response(ex.scope, ex.receive, ex.send)


class _SSE:
    """The `alt=sse` framing: an event per answer, lines ending in `\r\n` as Gemini's."""

    def piece(self, answers: list[GenerateResponse]) -> bytes:
        if not answers:
            return b""
        return b"data: " + joined(answers, b"\r\n\r\ndata: ") + b"\r\n\r\n"

    def end(self) -> bytes:
        return b""

    def error(self, exc: ThanosError) -> bytes:
        return b"data: " + gemini_error(exc) + b"\r\n\r\n"


class _Array:
    """The JSON-array framing (no `alt=sse`): `[`, items joined by `,`, `]`; an error ends the
    array as one more item, or as its only one when it came before the first answer."""

    def __init__(self) -> None:
        self.opened = False

    def piece(self, answers: list[GenerateResponse]) -> bytes:
        if not answers:
            return b""
        opening, self.opened = b",\r\n" if self.opened else b"[", True
        return opening + joined(answers, b",\r\n")

    def end(self) -> bytes:
        return b"]" if self.opened else b"[]"

    def error(self, exc: ThanosError) -> bytes:
        return (b"," if self.opened else b"[") + gemini_error(exc) + b"]"


async def _pieces(reply: Reply, model: str, framing: _SSE | _Array) -> AsyncIterator[bytes]:
    """One answer per text delta, those of one upstream read as one piece (one write); tool
    calls whole, and the finish and usage, at the end. One generator for the whole stream:
    closing it closes the upstream's."""
    if reply.response is not None:
        reply.finish()
        yield framing.piece([whole(reply.response, model)]) + framing.end()
        return
    assert reply.batches is not None
    calls = Calls()
    finish: str | None = None
    try:
        async for batch in reply.batches:
            answers = []
            for chunk in batch:
                if chunk.usage is not None:
                    reply.usage = chunk.usage
                parts, finish = _delta(chunk, calls, finish)
                if parts:
                    answers.append(_answer(parts, model, None, None))
            if answers:
                yield framing.piece(answers)
    finally:
        await close(reply.batches)
    tail = [_call_part(name, text) for name, text in calls.whole()]
    yield framing.piece([_answer(tail, model, _finish(finish), reply.usage)]) + framing.end()


def _delta(chunk: ChatChunk, calls: Calls, finish: str | None) -> tuple[list[Part], str | None]:
    if not chunk.choices:
        return [], finish
    choice = chunk.choices[0]
    delta = choice.delta
    for call in delta.tool_calls or ():
        calls.add(call)
    parts: list[Part] = []
    thought = delta.reasoning_content or delta.reasoning
    if thought:
        parts.append(Part(text=thought, thought=True))
    if delta.content:
        parts.append(Part(text=delta.content))
    return parts, choice.finish_reason or finish


def whole(response: ChatResponse, model: str) -> GenerateResponse:
    choice = response.choices[0] if response.choices else None
    message = choice.message if choice else None
    parts: list[Part] = []
    if message is not None:
        thought = message.reasoning_content or message.reasoning
        if thought:
            parts.append(Part(text=thought, thought=True))
        if message.content:
            parts.append(Part(text=message.content))
        calls = message.tool_calls or ()
        parts += [_call_part(c.function.name, c.function.arguments) for c in calls]
        if parts and message.reasoning_signature:
            parts[-1].thought_signature = message.reasoning_signature
    finish = _finish(choice.finish_reason if choice else None)
    answer = _answer(parts, model, finish, response.usage)
    answer.response_id = response.id
    return answer


def _answer(
    parts: list[Part], model: str, finish: str | None, usage: Usage | None
) -> GenerateResponse:
    candidate = Candidate(content=Content(role="model", parts=parts), finish_reason=finish)
    return GenerateResponse(
        candidates=[candidate], usage_metadata=_usage(usage), model_version=model
    )


def _call_part(name: str, arguments: str) -> Part:
    try:
        args = _decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        args = {"arguments": arguments}  # Gemini's args must be an object; keep the text
    if not isinstance(args, dict):
        args = {"value": args}
    return Part(function_call=GFunctionCall(name=name, args=args))


def _finish(reason: str | None) -> str | None:
    return None if reason is None else _FINISH.get(reason, "STOP")


def _usage(usage: Usage | None) -> UsageMetadata | None:
    if usage is None:
        return None
    thoughts = usage.reasoning_tokens
    return UsageMetadata(
        prompt_token_count=usage.prompt_tokens,
        candidates_token_count=max(usage.output_tokens - thoughts, 0),
        thoughts_token_count=thoughts,
        cached_content_token_count=usage.cached_tokens,
        total_token_count=usage.total_tokens or usage.prompt_tokens + usage.output_tokens,
    )


# -- countTokens, embeddings, models ---------------------------------------------------------


class _TokenCount(msgspec.Struct, rename="camel"):
    total_tokens: int


async def _count(app: ThanosApp, ex: Exchange, model: str) -> None:
    body = await read_body(ex.scope, ex.receive, app.limit)
    data = decode_json(body)
    inner = data.get("generateContentRequest")
    if isinstance(inner, dict):
        data = inner
    app.gateway.model_info(model)  # 404 for a model the gateway cannot route
    await app.gateway.check_access(model, ex.context())  # the key's allow-list and rpm
    request = decode.decode_generate(_encode(data), model, stream=False)
    await respond(ex.send, 200, _encode(_TokenCount(estimate_prompt_tokens(request))))


class _Embedding(msgspec.Struct):
    values: list[float]


class _EmbedOne(msgspec.Struct, rename="camel"):
    content: Content
    output_dimensionality: int | None = None


class _EmbedMany(msgspec.Struct):
    requests: list[_EmbedOne]


def _text(content: Content, index: int) -> str:
    text = "".join(part.text or "" for part in content.parts)
    if not text:
        raise InvalidRequest("an embedding needs text in `content.parts`", param=f"[{index}]")
    return text


async def _embed(app: ThanosApp, ex: Exchange, model: str) -> None:
    one = convert(decode_json(await read_body(ex.scope, ex.receive, app.limit)), _EmbedOne)
    request = EmbeddingRequest(
        model=model, input=_text(one.content, 0), dimensions=one.output_dimensionality
    )
    vectors = await _vectors(app, ex, request)
    await respond(ex.send, 200, _encode({"embedding": vectors[0]}))


async def _embed_many(app: ThanosApp, ex: Exchange, model: str) -> None:
    many = convert(decode_json(await read_body(ex.scope, ex.receive, app.limit)), _EmbedMany)
    if not many.requests:
        raise InvalidRequest("`requests` must not be empty", param="requests")
    texts: list[str | int | list[int]] = [_text(r.content, i) for i, r in enumerate(many.requests)]
    dimensions = many.requests[0].output_dimensionality
    request = EmbeddingRequest(model=model, input=texts, dimensions=dimensions)
    vectors = await _vectors(app, ex, request)
    await respond(ex.send, 200, _encode({"embeddings": vectors}))


async def _vectors(app: ThanosApp, ex: Exchange, request: EmbeddingRequest) -> list[_Embedding]:
    response = await app.gateway.embed(request, ex.context())
    ordered = sorted(response.data, key=lambda item: item.index)
    return [_Embedding(e.embedding if isinstance(e.embedding, list) else []) for e in ordered]


class _Model(msgspec.Struct, rename="camel"):
    name: str
    display_name: str
    description: str
    version: str
    supported_generation_methods: list[str]


def _shape(info: ModelInfo) -> _Model:
    return _Model(f"models/{info.id}", info.id, f"{info.id} through the gateway", "", _METHODS)


async def _models(app: ThanosApp, ex: Exchange) -> None:
    models = [_shape(info) for info in await app.gateway.models()]
    await respond(ex.send, 200, _encode({"models": models}))


async def _model(app: ThanosApp, ex: Exchange, model: str) -> None:
    await respond(ex.send, 200, _encode(_shape(app.gateway.model_info(model))))


_ACTIONS: dict[str, Any] = {
    "generateContent": _generate,
    "streamGenerateContent": _stream,
    "countTokens": _count,
    "embedContent": _embed,
    "batchEmbedContents": _embed_many,
}
