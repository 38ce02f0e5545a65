"""`GET /admin/events`: server-sent events of finished requests (`event: request`, the
ledger row) and provider state changes (`event: provider`, checked every `POLL` seconds)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.frontends.admin._common import NO_STORE, Caller
from thanos_asgi.frontends.sse import EventSourceResponse

if TYPE_CHECKING:
    from thanos_asgi.core.gateway import Gateway
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

POLL = 1.0
_encode = msgspec.json.Encoder().encode


def _event(kind: str, data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def _states(gateway: Gateway) -> dict[str, str]:
    return {name: str(state.get("state")) for name, state in gateway.status().items()}


async def _feed(gateway: Gateway) -> AsyncIterator[bytes]:
    states = _states(gateway)
    yield _event("hello", {"providers": states})
    with gateway.events.subscribe() as queue:
        while True:
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(queue.get(), POLL)
                yield _event("request", event)
                continue
            now = _states(gateway)
            for name, state in now.items():
                if states.get(name) != state:
                    yield _event("provider", {"name": name, "state": state})
            states = now


async def stream(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    response = EventSourceResponse(_feed(admin.gateway), headers=NO_STORE, keepalive=15.0)
    await response(ex.scope, ex.receive, ex.send)
