"""The wire half of the upstream HTTP/1.1 client (`_h1.py`): one connection as an asyncio
protocol fed to httptools' parser, and the response read from it whole or chunk by chunk.

The parser calls back for each header and body piece; headers are kept raw and decoded only
when someone asks for them (error answers), bodies are queued as they come and the socket stops
being read while more than `HIGH_WATER` bytes wait. Every wait has its own timer, so a read
timeout is the longest silence between pieces, cut short by a total deadline.
"""

from __future__ import annotations

import asyncio
import collections
import time
import zlib
from collections.abc import Mapping
from typing import Any, Protocol

import httptools

from thanos_asgi.exceptions import UpstreamProtocolError, UpstreamTimeout
from thanos_asgi.upstream.base import Timeouts

HIGH_WATER = 256 * 1024  # bytes of unread body before the socket stops being read
Route = tuple[str, int, bool, bytes]  # host, port, tls, the request head's first lines


class Pool(Protocol):
    def release(self, conn: Connection) -> None: ...


class Stale(Exception):
    """A reused connection ended before any of the response came: send again."""


class Headers(dict[str, str]):
    """Response headers, names lower-cased: `get` and `[]` take any case."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Connection(asyncio.Protocol):
    """One socket and the response being read from it."""

    def __init__(self, route: Route, loop: asyncio.AbstractEventLoop) -> None:
        self.route, self.loop = route, loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.begin()

    def begin(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.headed = self.complete = self.paused = self.informational = False
        self.keep_alive = False
        self.received = 0  # bytes of this response so far
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.error: Exception | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamProtocolError(f"bad response from the provider: {exc}")
            self.close()
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headed and not self.keep_alive and not self._framed():
                self.complete = True  # a body that ends where the connection does
            elif self.received == 0:
                self.error = Stale()
            else:
                self.error = UpstreamProtocolError(
                    "the provider closed the connection mid-response"
                )
        self._wake()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the answer follows
            self.raw_headers, self.informational = [], True
            return
        self.status, self.headed = status, True
        self.keep_alive = self.parser.should_keep_alive()  # (only valid until the message ends)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True

    # -- for the response -----------------------------------------------------------------------

    def _framed(self) -> bool:
        names = {name.lower() for name, _ in self.raw_headers}
        return b"content-length" in names or b"transfer-encoding" in names

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, limit: float | None) -> None:
        """Until more arrived, the response ended or failed; TimeoutError after `limit` s."""
        waiter = self.waiter = self.loop.create_future()
        timer = None if limit is None else self.loop.call_later(limit, _expire, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """What `send` returns: status and headers arrived; the body is read on demand."""

    __slots__ = (
        "_conn", "_decoder", "_headers", "_pool", "_released", "_timeouts", "_until", "status",
    )  # fmt: skip

    def __init__(self, conn: Connection, pool: Pool, timeouts: Timeouts, until: float):
        self._conn, self._pool, self._timeouts, self._until = conn, pool, timeouts, until
        self.status = conn.status
        self._headers: Headers | None = None
        self._released = False
        self._decoder = _decoder(conn.raw_headers)

    @property
    def headers(self) -> Mapping[str, str]:
        if self._headers is None:  # built only when asked for (errors): most never are
            self._headers = Headers()
            for name, value in self._conn.raw_headers:
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                known = dict.get(self._headers, key)
                dict.__setitem__(self._headers, key, text if known is None else f"{known}, {text}")
        return self._headers

    async def read(self) -> bytes:
        conn = self._conn
        try:
            while not conn.complete:
                await self._more()
            data = self._decode(conn.take(), final=True)
        except BaseException:
            self._release(reuse=False)
            raise
        self._release(reuse=True)
        return data

    def iter_bytes(self) -> Response:
        return self

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        try:
            while True:
                if conn.chunks:
                    data = self._decode(conn.take(), final=False)
                    if data:
                        return data
                elif conn.complete:
                    data = self._decode(b"", final=True)
                    self._release(reuse=True)
                    if data:
                        return data
                    raise StopAsyncIteration
                else:
                    await self._more()
        except StopAsyncIteration:
            raise
        except BaseException:
            self._release(reuse=False)
            raise

    async def _more(self) -> None:
        conn = self._conn
        if conn.error is None:
            try:
                await conn.wait(limit(self._timeouts.read, self._until))
            except TimeoutError:
                raise UpstreamTimeout("the provider did not answer in time") from None
        if conn.error is not None:
            raise _protocol_error(conn.error)

    def _decode(self, data: bytes, *, final: bool) -> bytes:
        if self._decoder is None:
            return data
        try:
            out: bytes = self._decoder.decompress(data)
            return out + self._decoder.flush() if final else out
        except zlib.error as exc:
            raise UpstreamProtocolError(f"bad compressed body from the provider: {exc}") from None

    def _release(self, *, reuse: bool) -> None:
        if not self._released:
            self._released = True
            if not reuse:
                self._conn.close()
            self._pool.release(self._conn)

    async def aclose(self) -> None:
        conn = self._conn  # a response not read to the end cannot go back to the pool
        self._release(reuse=conn.complete and not conn.chunks)


def _decoder(raw_headers: list[tuple[bytes, bytes]]) -> Any:
    """A zlib decompressor when the body is gzip or deflate (we ask for neither)."""
    encoding = b""
    for name, value in raw_headers:
        if len(name) == 16 and name.lower() == b"content-encoding":
            encoding = value.strip().lower()
    if not encoding or encoding == b"identity":
        return None
    if encoding in (b"gzip", b"x-gzip", b"deflate"):
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # a gzip or zlib header, told apart
    raise UpstreamProtocolError(
        f"the provider sent a body encoded as {encoding.decode('latin-1')!r}"
    )


def _protocol_error(error: Exception) -> Exception:
    if isinstance(error, Stale):
        return UpstreamProtocolError("the provider closed the connection before answering")
    return error


def limit(read: float | None, until: float) -> float | None:
    """Seconds to wait now: the read timeout, cut short by the total deadline (if any)."""
    if until == 0.0:
        return read
    left = max(until - time.monotonic(), 0.0)
    return left if read is None else min(read, left)
