"""Server-sent events out: an ASGI response that streams an async iterator of event bytes.

While the source is silent it sends keep-alive comments; when the client goes away it
cancels the source (closing the upstream request with it), at most `WATCH_AFTER` seconds
into the stream: the task that waits for the client to leave starts only then, so the many
streams that end sooner never pay for one. An exception from the
source after the first byte becomes a final error event made by `on_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from thanos_asgi.exceptions import ProviderUnavailable, ThanosError
from thanos_asgi.frontends._watch import WATCH_AFTER, Sweeper
from thanos_asgi.frontends.asgi import Headers, Receive, Scope, Send

log = logging.getLogger("thanos_asgi")

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE = b": keep-alive\n\n"
__all__ = ["KEEPALIVE", "SSE_HEADERS", "WATCH_AFTER", "EventSourceResponse", "joined"]
_encode_lines = msgspec.json.Encoder().encode_lines


def joined(values: list[Any], between: bytes) -> bytes:
    """`values` as JSON in one encode, `between` where one ends and the next begins (b"" for
    none): msgspec writes each value on a line of its own and escapes any line end inside
    one, so each line end it writes is such a place. How a front-end frames a read's events
    (`data: ` lines, a JSON array's items) without an encode per event."""
    return _encode_lines(values)[:-1].replace(b"\n", between)


class EventSourceResponse:
    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        headers: Headers = (),  # type: ignore[assignment]
        keepalive: float | None = 15.0,
        on_error: Callable[[ThanosError], bytes] | None = None,
        on_close: Callable[[str], None] | None = None,
        on_first_event: Callable[[], None] | None = None,
    ) -> None:
        self.events = events
        self.headers = [*SSE_HEADERS, *headers]
        self.keepalive = keepalive
        self.on_error = on_error
        self.on_close = on_close
        self.on_first_event = on_first_event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        stream = _Stream(self, send, receive, task)
        sweeper: Sweeper | None = None
        try:  # from the first await on: whatever happens, the source is closed and reported
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            stream.started = True
            sweeper = Sweeper.of(task.get_loop())
            sweeper.add(stream)
            await stream.pump()
        except asyncio.CancelledError:
            if not stream.left:  # the server stops us (its drain deadline), not the client
                if not stream.started or not await stream.cut_off() or task.uncancel() > 0:
                    raise  # no final event could be sent, or something else cancels us too
            else:
                task.uncancel()  # the client left: an ordinary end of this response
        finally:
            if sweeper is not None:
                sweeper.waiting.pop(stream, None)
            if stream.watcher is not None:
                stream.watcher.cancel()
                stream.watcher = None  # its traceback holds our frame: no cycle
            await stream.close()


class _Stream:
    """Per-response state: when we last sent, whether a send is under way, the outcome."""

    __slots__ = (
        "last_sent", "left", "outcome", "pump_task", "receive", "response", "send", "sending",
        "started", "watcher",
    )  # fmt: skip

    def __init__(
        self, response: EventSourceResponse, send: Send, receive: Receive, task: asyncio.Task[Any]
    ) -> None:
        self.response = response
        self.send, self.receive, self.pump_task = send, receive, task
        self.last_sent = time.monotonic()
        self.sending = False
        self.left = False  # the client disconnected
        self.started = False  # the response's start went out
        self.outcome = "disconnected"
        self.watcher: asyncio.Task[None] | None = None

    def start_watching(self) -> None:
        # One plain asyncio task per stream still going (a task group costs several times more)
        self.watcher = asyncio.get_running_loop().create_task(self.watch())

    async def pump(self) -> None:
        send, events = self.send, aiter(self.response.events)
        try:
            async for data in events:  # the first event, then the rest in the loop below
                if self.response.on_first_event is not None:
                    self.response.on_first_event()
                await self._send(data)
                break
            async for data in events:  # _send, inlined: this loop runs once per upstream read
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

    async def cut_off(self) -> bool:
        """The server cancelled this stream (its drain deadline passed): end it with a final
        error event in the client's own shape. True once that is sent (within a second)."""
        if self.response.on_error is None:
            return False
        exc = ProviderUnavailable(
            "the gateway is shutting down and this stream outlived its drain time",
            code="server_shutting_down",
        )
        body = self.response.on_error(exc)
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(1.0):
                await self.send({"type": "http.response.body", "body": body, "more_body": True})
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                self.outcome = "error"
        log.warning("a stream was cut off at the drain deadline")
        return self.outcome == "error"

    async def _send(self, data: bytes) -> None:
        self.sending = True
        await self.send({"type": "http.response.body", "body": data, "more_body": True})
        self.sending = False
        self.last_sent = time.monotonic()

    async def watch(self) -> None:
        """Wait for the client to leave (then cancel the pump); send keep-alives meanwhile."""
        receive, pump = self.receive, self.pump_task
        interval = self.response.keepalive
        while True:
            if interval is None:
                message = await receive()
            else:
                try:
                    async with asyncio.timeout(interval):
                        message = await receive()
                except TimeoutError:
                    await self._ping(interval)
                    continue
            if message["type"] == "http.disconnect":
                self.left = True
                pump.cancel()
                return

    async def _ping(self, interval: float) -> None:
        if not self.sending and time.monotonic() - self.last_sent >= interval * 0.9:
            self.last_sent = time.monotonic()
            await self.send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    async def close(self) -> None:
        """Close the source (and the upstream request with it), then report the outcome -
        even when closing is itself interrupted."""
        try:
            closer = getattr(self.response.events, "aclose", None)
            if closer is not None:
                await closer()
        finally:
            if self.response.on_close is not None:
                self.response.on_close(self.outcome)
