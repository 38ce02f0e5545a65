"""`GET /admin/events`: server-sent events of finished requests (`event: request`, the
ledger row) and provider state changes (`event: provider`: an instance's circuit, or one
model's when `model` is set; checked every `POLL` seconds)."""

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


def _states(gateway: Gateway) -> dict[tuple[str, str | None], str]:
    """Each instance's circuit, and each of its models' that failed lately."""
    found: dict[tuple[str, str | None], str] = {}
    for name, state in gateway.status().items():
        found[name, None] = str(state.get("state"))
        for model, own in (state.get("models") or {}).items():
            found[name, model] = str(own.get("state"))
    return found


async def _feed(gateway: Gateway) -> AsyncIterator[bytes]:
    states = _states(gateway)
    yield _event("hello", {"providers": {name: v for (name, m), v in states.items() if not m}})
    loop = asyncio.get_running_loop()
    checked = loop.time()
    with gateway.events.subscribe() as queue:
        while True:
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(queue.get(), max(0.0, checked + POLL - loop.time()))
                yield _event("request", event)
            if loop.time() - checked < POLL:
                continue
            checked = loop.time()
            now = _states(gateway)
            for (name, model), state in now.items():
                if states.get((name, model)) != state:
                    yield _event("provider", {"name": name, "model": model, "state": state})
            states = now


async def stream(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    response = EventSourceResponse(_feed(admin.gateway), headers=NO_STORE, keepalive=15.0)
    await response(ex.scope, ex.receive, ex.send)
