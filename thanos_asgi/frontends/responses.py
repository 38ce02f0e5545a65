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

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.exceptions import InvalidRequest, MethodNotAllowed, NotFound
from thanos_asgi.frontends import _responses_in as decode
from thanos_asgi.frontends import _responses_out as out
from thanos_asgi.frontends._responses_types import RequestBody, ResponseObject, Stored
from thanos_asgi.frontends.asgi import JSON, read_body, respond, route_path
from thanos_asgi.frontends.openai import convert, decode_json
from thanos_asgi.frontends.sse import EventSourceResponse
from thanos_asgi.governance.pricing import estimate_prompt_tokens
from thanos_asgi.governance.response_store import ResponseStore, open_store
from thanos_asgi.types import Message

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange, ThanosApp

PREFIX = "/v1/responses"
_encode = msgspec.json.Encoder().encode
_decode_stored = msgspec.json.Decoder(Stored).decode


def store_of(app: ThanosApp) -> ResponseStore:
    if app.response_store is None:
        app.response_store = open_store(app.gateway.config, app.gateway.state)
    return app.response_store


async def create(app: ThanosApp, ex: Exchange) -> None:
    body = convert(decode_json(await read_body(ex.scope, ex.receive, app.limit)), RequestBody)
    if not body.model:
        raise InvalidRequest("`model` must name a model", param="model")
    ctx = ex.context()
    earlier = await _earlier(app, body.previous_response_id, ctx.key_id)
    turns = decode.conversation(body, earlier)
    request = decode.to_chat(body, turns)
    shell = _shell(body)
    reply = await app.gateway.dispatch(request, ctx)

    async def keep(response: ResponseObject) -> None:
        if body.store:
            turn = out.assistant_turn(response.output)
            entry = Stored(response=response, messages=[*turns, turn], key_id=ctx.key_id)
            await store_of(app).put(response.id, _encode(entry))

    if reply.response is not None:
        reply.finish()
        response = out.whole(shell, reply.response)
        await keep(response)
        await respond(ex.send, 200, _encode(response), [*JSON, *app._headers(ex, reply)])
        return
    events = out.Events(shell)
    stream = EventSourceResponse(
        _stored_after(out.stream(reply, events), events, keep),
        headers=app._headers(ex, reply),
        keepalive=app.keepalive or None,
        on_error=events.error,
        on_close=reply.finish,
        on_first_event=reply.first_event_sent,
    )
    await stream(ex.scope, ex.receive, ex.send)


async def _stored_after(
    source: AsyncIterator[bytes],
    events: out.Events,
    keep: Callable[[ResponseObject], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The events, then the finished response into the store (a failed one is not kept)."""
    async for event in source:
        yield event
    if events.shell.status in ("completed", "incomplete"):
        await keep(events.shell)


def _shell(body: RequestBody) -> ResponseObject:
    format = body.text.format if body.text else None
    text = {"format": msgspec.to_builtins(format)} if format else None
    return ResponseObject(
        id=out.new_id("resp"),
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


async def _earlier(app: ThanosApp, response_id: str | None, key_id: str | None) -> list[Message]:
    if not response_id:
        return []
    stored = await _stored(app, response_id, key_id, param="previous_response_id")
    return stored.messages


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
    earlier = await _earlier(app, body.previous_response_id, ex.context().key_id)
    request = decode.to_chat(body, decode.conversation(body, earlier))
    app.gateway.model_info(body.model)  # 404 for a model the gateway cannot route
    await app.gateway.check_access(body.model, ex.context())  # the key's allow-list and rpm
    count = {"object": "response.input_tokens", "input_tokens": estimate_prompt_tokens(request)}
    await respond(ex.send, 200, _encode(count))
