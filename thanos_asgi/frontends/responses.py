"""The OpenAI Responses API: `POST /v1/responses`, `GET` / `DELETE /v1/responses/{id}`,
`POST /v1/responses/input_tokens`.

What the OpenAI Agents SDK and Codex-style agents speak, to every provider: the request
becomes canonical (`_responses_in` lists the mapping) and goes through the same admission
and dispatch as a chat completion; the answer comes back as a response object, or as the
typed event stream (`_responses_out`). With `store` (the default) the answer and the
conversation behind it are kept (`governance/response_store.py`) for `GET`, `DELETE` and
`previous_response_id`, visible only to the client key that made them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.context import Context
from thanos_asgi.core.gateway import Reply, close
from thanos_asgi.exceptions import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ThanosError,
    UpstreamProtocolError,
)
from thanos_asgi.frontends import _responses_in as decode
from thanos_asgi.frontends import _responses_out as out
from thanos_asgi.frontends._responses_types import RequestBody, ResponseObject, Stored
from thanos_asgi.frontends.asgi import JSON, read_body, respond, route_path
from thanos_asgi.frontends.openai import convert, decode_json
from thanos_asgi.frontends.sse import EventSourceResponse
from thanos_asgi.governance.pricing import estimate_prompt_tokens
from thanos_asgi.governance.response_store import ResponseStore, open_store
from thanos_asgi.providers.openai_responses import WIRE
from thanos_asgi.types import Message
from thanos_asgi.upstream.framing import parse_block

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange, ThanosApp

PREFIX = "/v1/responses"
_encode = msgspec.json.Encoder().encode
_decode_stored = msgspec.json.Decoder(Stored).decode
_decode_any = msgspec.json.Decoder().decode
_KNOWN_ITEMS = ("message", "function_call", "reasoning")
_FINAL = re.compile(rb'"type"\s*:\s*"response\.(completed|incomplete)"')


def upstream_response(data: bytes, *, event: bool = False) -> ResponseObject:
    """A relayed answer (or the `response` of its last event) as the store keeps it: items
    of the kinds this gateway knows, the rest left out."""
    try:
        raw = _decode_any(data)
        raw = raw.get("response", raw) if event else raw
        kept = [i for i in raw.get("output") or () if i.get("type") in _KNOWN_ITEMS]
        return msgspec.convert({**raw, "output": kept}, ResponseObject)
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError, TypeError):
        raise UpstreamProtocolError("the relayed response is not readable") from None


def store_of(app: ThanosApp) -> ResponseStore:
    if app.response_store is None:
        app.response_store = open_store(app.gateway.config, app.gateway.state)
    return app.response_store


async def create(app: ThanosApp, ex: Exchange) -> None:
    data = decode_json(await read_body(ex.scope, ex.receive, app.limit))
    body = convert(data, RequestBody)
    if not body.model:
        raise InvalidRequest("`model` must name a model", param="model")
    ctx = ex.context()
    stored = await _previous(app, body.previous_response_id, ctx.key_id)
    turns = decode.conversation(body, stored.messages if stored else [])
    request = decode.to_chat(body, turns)
    _relay_only(app, body, ctx)
    relayable = stored is None or stored.relayed  # a translated turn is continued translated
    keep = _keeper(app, body, turns, ctx.key_id)
    raw = data if relayable else None
    async with app.dispatch(ex, request, ctx, raw=raw, wire=WIRE) as reply:
        await _answer(app, ex, reply, body, keep)


async def _answer(
    app: ThanosApp, ex: Exchange, reply: Reply, body: RequestBody, keep: Keep
) -> None:
    if reply.relayed is not None:
        await _relay(app, ex, reply, keep)
        return
    shell = _shell(body)
    if reply.response is not None:
        reply.finish()
        response = out.whole(shell, reply.response)
        await keep(response, False)
        await respond(ex.send, 200, _encode(response), [*JSON, *app._headers(ex, reply)])
        return
    events = out.Events(shell)
    source = out.stream(reply, events, lambda: keep(events.shell, False))
    await _stream(app, ex, reply, source, events.error)


def _relay_only(app: ThanosApp, body: RequestBody, ctx: Context) -> None:
    """Built-in tools run only at an instance that takes the request as it is: the first
    candidate must be one, and no fallback may translate the request for another."""
    tools = decode.built_in(body.tools)
    if not tools:
        return
    first = app.gateway.planner.plan(body.model, ctx)[0]
    if app.gateway.providers[first.instance].wire != WIRE:
        raise InvalidRequest(
            f"the built-in tool {tools[0]!r} runs only on OpenAI's servers (an instance with "
            'wire_api = "responses"); only function tools cross to other providers',
            param=f"tools[{_first_built_in(body)}]",
        )
    ctx.fallback = False


def _first_built_in(body: RequestBody) -> int:
    types = [tool.get("type") for tool in body.tools or ()]
    return next(i for i, kind in enumerate(types) if kind != "function")


Keep = Callable[[ResponseObject, bool], Awaitable[None]]


def _keeper(app: ThanosApp, body: RequestBody, turns: list[Message], key_id: str | None) -> Keep:
    async def keep(response: ResponseObject, relayed: bool) -> None:
        if body.store and response.status in ("completed", "incomplete"):
            turn = out.assistant_turn(response.output)
            entry = Stored(response=response, messages=[*turns, turn], key_id=key_id)
            entry.relayed = relayed
            await store_of(app).put(response.id, _encode(entry))

    return keep


async def _relay(app: ThanosApp, ex: Exchange, reply: Reply, keep: Keep) -> None:
    relayed = reply.relayed
    assert relayed is not None
    if relayed.events is None:
        reply.finish()
        await keep(upstream_response(relayed.body), True)
        await respond(ex.send, 200, relayed.body, [*JSON, *app._headers(ex, reply)])
        return
    await _stream(app, ex, reply, _kept_relay(relayed.events, keep), _relay_error)


async def _stream(
    app: ThanosApp,
    ex: Exchange,
    reply: Reply,
    events: AsyncIterator[bytes],
    on_error: Callable[[ThanosError], bytes],
) -> None:
    stream = EventSourceResponse(
        events,
        headers=app._headers(ex, reply),
        keepalive=app.keepalive or None,
        on_error=on_error,
        on_close=reply.finish,
        on_first_event=reply.first_event_sent,
    )
    await stream(ex.scope, ex.receive, ex.send)


async def _kept_relay(source: AsyncIterator[bytes], keep: Keep) -> AsyncIterator[bytes]:
    """Relayed events untouched; the completed response they end with goes into the store.
    Closing this closes `source` (and the upstream response) at once."""
    try:
        async for batch in source:
            yield batch
            if batch.rfind(b"response.completed") < 0 and batch.rfind(b"response.incomplete") < 0:
                continue
            for block in batch.split(b"\n\n"):
                data = parse_block(block).data
                if (
                    b'"response":' in data and b"response.completed" in data
                ) or b"incomplete" in data:
                    await keep(upstream_response(data, event=True), True)
    finally:
        await close(source)


def _relay_error(exc: ThanosError) -> bytes:
    error = {"type": "error", "code": exc.code or exc.type, "message": exc.message}
    return b"event: error\ndata: " + _encode(error) + b"\n\n"


def _shell(body: RequestBody) -> ResponseObject:
    format = body.text.format if body.text else None
    text = {"format": msgspec.to_builtins(format)} if format else None
    return ResponseObject(
        # a stored answer's id is all it takes to read it: unguessable; an unstored one's
        # reads nothing, and `random` spares a getrandom(2) per stream
        id=out.new_id("resp") if body.store else out.item_id("resp"),
        created_at=out.created_now(),
        status="in_progress",
        model=body.model,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning=body.reasoning,
        store=body.store,
        temperature=body.temperature,
        text=text or {"format": {"type": "text"}},
        tool_choice=body.tool_choice or "auto",
        tools=body.tools or [],
        top_p=body.top_p,
        user=body.user,
        metadata=body.metadata or {},
    )


async def _previous(app: ThanosApp, response_id: str | None, key_id: str | None) -> Stored | None:
    if not response_id:
        return None
    return await _stored(app, response_id, key_id, param="previous_response_id")


async def _stored(app: ThanosApp, response_id: str, key_id: str | None, param: str) -> Stored:
    entry = await store_of(app).get(response_id)
    stored = _decode_stored(entry) if entry is not None else None
    if stored is None or stored.key_id != key_id:  # another key's answer is not there for you
        raise NotFound(f"no stored response {response_id[:80]!r}", param=param)
    return stored


async def one(app: ThanosApp, ex: Exchange) -> None:
    """`GET` or `DELETE /v1/responses/{id}`."""
    response_id = route_path(ex.scope)[len(PREFIX) + 1 :]
    key_id = ex.context().key_id
    stored = await _stored(app, response_id, key_id, param="response_id")
    if ex.scope["method"] == "GET":
        await respond(ex.send, 200, _encode(stored.response))
    elif ex.scope["method"] == "DELETE":
        await store_of(app).delete(response_id)
        body = {"id": response_id, "object": "response", "deleted": True}
        await respond(ex.send, 200, _encode(body))
    else:
        raise MethodNotAllowed(f"{PREFIX}/{{id}} takes GET or DELETE")


async def input_tokens(app: ThanosApp, ex: Exchange) -> None:
    """`POST /v1/responses/input_tokens`: the estimate budgets reserve by; no provider call."""
    body = convert(decode_json(await read_body(ex.scope, ex.receive, app.limit)), RequestBody)
    stored = await _previous(app, body.previous_response_id, ex.context().key_id)
    request = decode.to_chat(body, decode.conversation(body, stored.messages if stored else []))
    app.gateway.model_info(body.model)  # 404 for a model the gateway cannot route
    await app.gateway.check_access(body.model, ex.context())  # the key's allow-list and rpm
    count = {"object": "response.input_tokens", "input_tokens": estimate_prompt_tokens(request)}
    await respond(ex.send, 200, _encode(count))
