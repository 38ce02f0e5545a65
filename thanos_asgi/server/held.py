"""`thanos serve`'s HTTP/1.1 protocol: uvicorn's httptools protocol, except that an answer's
head leaves with the first piece of its body.

uvicorn writes an answer's head as soon as the app sends `http.response.start`, then its body:
two send(2) calls and two TCP segments for every whole answer (on loopback the kernel delivers
each segment within the sender's call: the head's write alone was ~8% of a saturated
pass-through's CPU). `HeldWrites` is the transport the protocol sees. The first write of each
turn of the event loop is held; the next write in the same turn goes out with it in one write
(a head and its body), and every write after that at once, as before (a burst of stream events
leaves event by event, so the client reads the first while the rest are made). What is still
held when the turn ends goes out then (a stream's head, before the loop waits for its first
event). Closing and half-closing write what is held first, so keep-alive and uvicorn's error
answers are unchanged; a write after the connection began closing is dropped, as the
transport's own would be.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

JOIN_AT_MOST = 64 * 1024  # bytes of body copied to go out with a held head (more: 2 writes)
Data = bytes | bytearray | memoryview


class HeldWrites(asyncio.Transport):
    """A connection's transport whose first write of a turn waits for the second, or the turn's
    end."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.transport = transport
        self._loop = loop
        self._held: Data | None = None
        self._turn = False  # this turn wrote already (its end is scheduled)

    def write(self, data: Data) -> None:
        if not data:
            return
        if not self._turn:
            self._turn = True
            self._held = data
            self._loop.call_soon(self._turn_ended)
            return
        held, self._held = self._held, None
        if held is not None and len(data) <= JOIN_AT_MOST:
            data = b"".join((held, data))
        elif held is not None:
            self._write(held)
        self._write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _turn_ended(self) -> None:
        self._turn = False
        self.flush()

    def flush(self) -> None:
        """Write what is held now."""
        held, self._held = self._held, None
        if held is not None:
            self._write(held)

    def _write(self, data: Data) -> None:
        if not self.transport.is_closing():  # (dropped, as the transport would drop it)
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
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
        held = 0 if self._held is None else len(self._held)
        return self.transport.get_write_buffer_size() + held

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)


class HeldHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `HeldWrites` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeldWrites(transport, self.loop))
