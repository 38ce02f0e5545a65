"""`thanos serve`'s HTTP/1.1 protocol: uvicorn's httptools protocol, except that what an
answer writes in one turn of the event loop leaves in one write.

uvicorn writes an answer's head as soon as the app sends `http.response.start`, then each piece
of its body, then (chunked) the body's end: a whole answer took two send(2) calls and two TCP
segments, a translated stream four (its head and events, its last event, `[DONE]`, the end). On
loopback the kernel delivers each segment within the sender's call: the head's write alone was
~8% of a saturated pass-through's CPU. `HeldWrites` is the transport the protocol sees. It
holds what is written during a turn and writes it as one when the answer is complete (uvicorn's
`on_response_complete`, before the app's own bookkeeping after its last send), when the
answer's task is about to wait for its provider (`upstream.base.BEFORE_WAIT`: a stream's head
and first events, each later event), when the turn ends (whatever else it waits for), or at
once when `FLUSH_AT` bytes are held. (Held only until the turn's end, a stream's first event
waited for every other stream's work in that turn: +2.7 ms TTFT p99 over 32 slow streams.)
Closing and half-closing write what is held first, so keep-alive and uvicorn's error answers
are unchanged; a write after the connection began closing is dropped, as the transport's own
would be.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from thanos_asgi.frontends.asgi import Receive, Scope, Send
from thanos_asgi.upstream.base import BEFORE_WAIT

FLUSH_AT = 64 * 1024  # bytes held at most: more are written at once
Data = bytes | bytearray | memoryview


class HeldWrites(asyncio.Transport):
    """A connection's transport whose writes wait for the answer's end, the turn's end or
    `FLUSH_AT` bytes, and then leave as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.transport = transport
        self._loop = loop
        self._held: list[Data] = []
        self._size = 0  # bytes in _held
        self._turn = False  # this turn wrote already (its end is scheduled)

    def write(self, data: Data) -> None:
        if not data:
            return
        self._held.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()
        if not self._turn:
            self._turn = True
            self._loop.call_soon(self._turn_ended)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _turn_ended(self) -> None:
        self._turn = False
        self.flush()

    def flush(self) -> None:
        """Write what is held now."""
        held = self._held
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        self._held, self._size = [], 0
        self._write(data)

    def _write(self, data: Data) -> None:
        if not self.transport.is_closing():  # (dropped, as the transport would drop it)
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held, self._size = [], 0
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)


class HeldHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `HeldWrites` transport."""

    transport: HeldWrites

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        held = HeldWrites(transport, self.loop)
        super().connection_made(held)
        app = self.app

        async def flushing(scope: Scope, receive: Receive, send: Send) -> None:
            BEFORE_WAIT.set(held.flush)  # (in this request's own task and context)
            await app(scope, receive, send)

        self.app = flushing

    def on_response_complete(self) -> None:
        self.transport.flush()  # (called right after the answer's last write)
        super().on_response_complete()
