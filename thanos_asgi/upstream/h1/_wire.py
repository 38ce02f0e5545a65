"""The wire half of the upstream HTTP/1.1 client (`_pool.py`): one connection as an asyncio
protocol fed to httptools' parser, and the response read from it whole or chunk by chunk.

The parser calls back for each header and body piece; headers are kept raw and decoded only
when someone asks for them (error answers), bodies are queued as they come and the socket stops
being read while more than `HIGH_WATER` bytes wait. Every wait has its own timer, so a read
timeout is the longest silence between pieces, cut short by a total deadline.

What a provider sends is not trusted: the header block is capped (`MAX_HEAD`), a body read whole
is capped (`max_body`), anything after the end of a response makes the connection unusable
(never part of the next answer), an encoded body (the client asks for `identity`), a protocol
switch and a malformed message are refused with `UpstreamProtocolError`.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httptools

from thanos_asgi.exceptions import UpstreamProtocolError, UpstreamTimeout
from thanos_asgi.upstream.base import BEFORE_WAIT, Timeouts

HIGH_WATER = 256 * 1024  # bytes of unread body before the socket stops being read
MAX_HEAD = 64 * 1024  # bytes of status line and headers (1xx answers included), as h11's
Route = tuple[str, int, bool, bytes]  # host, port, tls, the host header line


class Pool(Protocol):
    max_body: int

    def release(self, conn: Connection) -> None: ...


class _Stop(Exception):
    """Raised in a parser callback to stop parsing (the reason is in `Connection.error`)."""


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
        self.spent = True  # no parser yet, or it stopped mid-message (a CONNECT's answer)
        self.chunks: list[bytes] = []  # the body read and not yet taken
        # httptools calls this for every piece of body (every chunk of a chunked stream): the
        # list's own append, no Python frame; `data_received` adds up their size after a read
        self.on_body: Callable[[bytes], None] = self.chunks.append
        self.begin()

    def begin(self, *, bodiless: bool = False, tunnel: bool = False) -> None:
        """Ready for the next response; `bodiless`: it answers a HEAD or a CONNECT (no body
        follows); `tunnel`: a CONNECT's, after which the connection goes on. The parser of a
        response that ended cleanly reads the next one (llhttp goes on across keep-alive
        messages); a connection whose response did not end cleanly is closed, except a
        tunnel, which gets a new parser."""
        if self.spent and self.transport is not None:  # (else made in `connection_made`)
            self.parser = httptools.HttpResponseParser(self)
            self.spent = False
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.headed = self.complete = self.paused = self.informational = False
        self.keep_alive = False
        self.bodiless, self.tunnel = bodiless, tunnel
        self.received = 0  # bytes of this response so far
        self.chunks.clear()
        self.buffered = 0
        self.error: Exception | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The parser is made here and dropped in `connection_lost`: it holds this protocol
        (its callbacks), so a connection that never opened or has closed would otherwise
        stay, with its last response's state, until the garbage collector finds the cycle."""
        self.transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)
        self.spent = False

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes after the response, or while idle: out of step, unusable
            self.close()
            return
        self.received += len(data)
        held = len(self.chunks)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self.spent = True  # stopped mid-message: only a tunnel goes on, with a new parser
            if not self.tunnel:
                self._fail(None)
        except httptools.HttpParserUpgrade:  # (`_fail` closes: the connection is never reused)
            self._fail(UpstreamProtocolError("the provider switched protocols (101 answer)"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad response from the provider: {exc}"))
        if len(self.chunks) > held:
            self.buffered += sum(map(len, self.chunks[held:]))
        if not self.headed and self.received > MAX_HEAD:
            self._fail(UpstreamProtocolError("the provider's response headers exceed 64 KiB"))
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def failure(self) -> Exception:
        """`error`, to raise: a copy, whose traceback (its frames hold this connection) the
        connection does not hold in turn. Raised itself, it would tie the request's frames to
        the connection in a cycle that only the garbage collector frees."""
        assert self.error is not None
        return copy.copy(self.error)

    def _fail(self, error: Exception | None) -> None:
        """Stop reading this connection; `error` unless a callback set one (or it was done)."""
        if self.error is None and not self.complete:
            self.error = error or UpstreamProtocolError("bad response from the provider")
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.spent = True  # never reused: no parser to keep (see `connection_made`)
        if hasattr(self, "parser"):
            del self.parser
        if not self.complete and self.error is None:
            if self.headed and not self.keep_alive and not self._framed():
                self.complete = True  # a body that ends where the connection does
            elif self.received == 0:
                error = UpstreamProtocolError(
                    "the provider closed the connection before answering (the request may "
                    "have reached it, so it is not sent again)"
                )
                error.maybe_delivered = True  # not resent to this provider by anyone
                self.error = error
            else:
                self.error = UpstreamProtocolError(
                    "the provider closed the connection mid-response"
                )
        self._wake()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response in the same read: never part of this exchange
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headed:  # (trailers are dropped)
            self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the answer follows
            if status == 101:
                self.error = UpstreamProtocolError("the provider switched protocols (101 answer)")
                raise _Stop
            self.raw_headers, self.informational = [], True
            return
        self.status, self.headed = status, True
        self.keep_alive = self.parser.should_keep_alive()  # (only valid until the message ends)
        if self.bodiless:  # a HEAD's answer ends with its headers; the parser cannot know
            self.complete, self.keep_alive = True, False
            raise _Stop

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
        before = BEFORE_WAIT.get()
        if before is not None:
            before()
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
        if self.transport is not None and not self.loop.is_closed():
            self.transport.close()  # (an earlier event loop's socket went with that loop)
        self.closed = True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """What `send` returns: status and headers arrived; the body is read on demand."""

    __slots__ = ("_conn", "_headers", "_pool", "_released", "_timeouts", "_until", "status")

    def __init__(self, conn: Connection, pool: Pool, timeouts: Timeouts, until: float):
        self._conn, self._pool, self._timeouts, self._until = conn, pool, timeouts, until
        self.status = conn.status
        self._headers: Headers | None = None
        self._released = False
        _refuse_encoded(conn.raw_headers)

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
        """The whole body; UpstreamProtocolError beyond the pool's `max_body` bytes."""
        conn = self._conn
        try:
            data = conn.take() if conn.complete else await self._read_rest()
        except BaseException:
            self._release(reuse=False)
            raise
        self._release(reuse=True)
        return data

    async def _read_rest(self) -> bytes:
        conn, parts, size, cap = self._conn, [], 0, self._pool.max_body
        while not conn.complete:
            if size + conn.buffered > cap:
                raise UpstreamProtocolError(f"the provider's answer exceeds {cap} bytes")
            if conn.paused:  # the buffer is full: take it, so the socket is read again
                size += conn.buffered
                parts.append(conn.take())
            await self._more()
        if size + conn.buffered > cap:
            raise UpstreamProtocolError(f"the provider's answer exceeds {cap} bytes")
        parts.append(conn.take())
        return b"".join(parts)

    def iter_bytes(self) -> Response:
        return self

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        try:
            while True:
                if conn.chunks:
                    return conn.take()
                if conn.complete:
                    self._release(reuse=True)
                    raise StopAsyncIteration
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
            raise conn.failure()

    def _release(self, *, reuse: bool) -> None:
        if not self._released:
            self._released = True
            if not reuse:
                self._conn.close()
            self._pool.release(self._conn)

    async def aclose(self) -> None:
        conn = self._conn  # a response not read to the end cannot go back to the pool
        self._release(reuse=conn.complete and not conn.chunks)


def _refuse_encoded(raw_headers: list[tuple[bytes, bytes]]) -> None:
    """The client asks for `identity`: a body encoded anyway (gzip, ...) is refused, never
    decoded (a small gzip body can unpack to gigabytes)."""
    for name, value in raw_headers:
        if len(name) == 16 and name.lower() == b"content-encoding":
            encoding = value.strip().lower()
            if encoding and encoding != b"identity":
                raise UpstreamProtocolError(
                    f"the provider sent a body encoded as {encoding.decode('latin-1')!r}, "
                    "which was not asked for"
                )


def limit(read: float | None, until: float) -> float | None:
    """Seconds to wait now: the read timeout, cut short by the total deadline (if any)."""
    if until == 0.0:
        return read
    left = max(until - time.monotonic(), 0.0)
    return left if read is None else min(read, left)
