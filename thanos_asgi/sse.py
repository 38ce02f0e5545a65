"""Server-sent events out: an ASGI response that streams an async iterator of event bytes.

While the source is silent it sends keep-alive comments; when the client goes away it
cancels the source at once (closing the upstream request with it). An exception from the
source after the first byte becomes a final error event made by `on_error`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio

from ._http import Headers, Receive, Scope, Send
from .exceptions import ThanosError

log = logging.getLogger("thanos_asgi")

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE = b": keep-alive\n\n"


class EventSourceResponse:
    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        headers: Headers = (),  # type: ignore[assignment]
        keepalive: float | None = 15.0,
        on_error: Callable[[ThanosError], bytes] | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.events = events
        self.headers = [*SSE_HEADERS, *headers]
        self.keepalive = keepalive
        self.on_error = on_error
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _Stream(self, send)
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(stream.watch, receive, group.cancel_scope)
                await stream.pump()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await stream.close()


class _Stream:
    """Per-response state: when we last sent, whether a send is under way, the outcome."""

    __slots__ = ("last_sent", "outcome", "response", "send", "sending")

    def __init__(self, response: EventSourceResponse, send: Send) -> None:
        self.response = response
        self.send = send
        self.last_sent = time.monotonic()
        self.sending = False
        self.outcome = "disconnected"

    async def pump(self) -> None:
        send = self.send
        try:
            async for data in self.response.events:
                self.sending = True
                await send({"type": "http.response.body", "body": data, "more_body": True})
                self.sending = False
                self.last_sent = time.monotonic()
            self.outcome = "ok"
        except ThanosError as exc:
            self.outcome = "error"
            if self.response.on_error is not None:
                body = self.response.on_error(exc)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            log.warning("stream ended with an error: %s", exc.message)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        """Wait for the client to leave (then cancel everything); send keep-alives meanwhile."""
        interval = self.response.keepalive
        while True:
            message = None
            with anyio.move_on_after(interval if interval is not None else float("inf")):
                message = await receive()
            if message is None:
                await self._ping(interval or 0.0)
            elif message["type"] == "http.disconnect":
                scope.cancel()
                return

    async def _ping(self, interval: float) -> None:
        if not self.sending and time.monotonic() - self.last_sent >= interval * 0.9:
            self.last_sent = time.monotonic()
            await self.send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    async def close(self) -> None:
        closer = getattr(self.response.events, "aclose", None)
        if closer is not None:
            await closer()
        if self.response.on_close is not None:
            self.response.on_close(self.outcome)
