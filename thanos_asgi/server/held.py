"""`thanos serve`'s HTTP/1.1 protocol: uvicorn's httptools protocol, except that what one turn
of the event loop writes on a connection goes out in one write.

uvicorn writes an answer's head as soon as the app sends `http.response.start`, then its body:
two send(2) calls and two TCP segments for every whole answer, where the second costs little
more than the first (on loopback the kernel delivers each segment inside the sender's call;
the head's write was ~8% of a saturated pass-through's CPU). `HeldWrites` is the transport the
protocol sees: a write is held until the event loop's turn ends (or `HOLD_AT_MOST` bytes are
held), then everything held goes out in one write, in order. A head and a body sent together
leave as one; a stream's events, each written when it comes, still leave as they come (at the
end of the turn that wrote them, before the loop waits for anything). Closing and half-closing
write what is held first, so keep-alive and uvicorn's error answers are unchanged; uvicorn's
backpressure sees the held bytes once they are written, so at most `HOLD_AT_MOST` more are
buffered than without. A write after the connection began closing is dropped, as the
transport's own would be.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_AT_MOST = 64 * 1024  # bytes held in one turn before they are written at once
Data = bytes | bytearray | memoryview


class HeldWrites(asyncio.Transport):
    """A connection's transport whose writes leave together at the end of each loop turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.transport = transport
        self._loop = loop
        self._held: list[Data] = []
        self._size = 0
        self._due = False  # a write at the end of this turn is scheduled

    def write(self, data: Data) -> None:
        if not data:
            return
        self._held.append(data)
        self._size += len(data)
        if self._size >= HOLD_AT_MOST:
            self.flush()
        elif not self._due:
            self._due = True
            self._loop.call_soon(self._turn_ended)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _turn_ended(self) -> None:
        self._due = False
        self.flush()

    def flush(self) -> None:
        """Write what is held now, in one write (dropped if the connection is closing)."""
        held = self._held
        if not held:
            return
        self._held, self._size = [], 0
        if self.transport.is_closing():
            return
        self.transport.write(held[0] if len(held) == 1 else b"".join(held))

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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeldWrites(transport, self.loop))
