"""A lean HTTP/1.1 client for the upstream data path: asyncio protocols, httptools' parser
(llhttp, the one uvicorn uses), and a keep-alive pool per host.

It does what the gateway needs and nothing else: one request at a time per connection, a body
given as bytes, the response read whole or chunk by chunk as it arrives (Content-Length,
chunked, or until the connection closes), TLS through the `ssl` module, and the four
`Timeouts`. Per request it costs a few dozen Python calls where aiohttp's client costs well
over a hundred (benchmarks/README.md).

A request is sent once. A kept-alive connection the server has closed meanwhile is noticed when
it is taken from the pool (closed, or readable while idle) and a new one is used instead; once
the request is written, a connection that ends before any answer is an error, never a resend
(the provider may have acted on it). The pool belongs to one event loop: when `send` runs in
another (a second `asyncio.run`), the old loop's connections are let go and a new pool begins.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
import time
from collections.abc import Mapping

from thanos_asgi.exceptions import (
    POOL_EXHAUSTED,
    ConfigError,
    UpstreamConnectError,
    UpstreamTimeout,
)
from thanos_asgi.upstream.base import Timeouts
from thanos_asgi.upstream.h1._proxy import Proxy
from thanos_asgi.upstream.h1._request import RequestWriter, parse_url
from thanos_asgi.upstream.h1._wire import Connection, Response, Route, limit

_DEFAULT = Timeouts()
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_CHECK_IDLE_AFTER = 1.0  # seconds idle after which a pooled connection's socket is looked at


def _readable(fd: int) -> bool:
    """Whether `fd` has something to read (or was closed) right now. `poll`, not `select`:
    `select.select` refuses descriptors above FD_SETSIZE (1024), which a busy gateway has."""
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class H1Transport:
    """Pooled HTTP/1.1 connections, kept alive `keepalive_seconds` while idle; at most
    `max_connections` open at once (more requests wait for one, as long as the connect timeout
    allows); a body read whole is at most `max_response_bytes`."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_seconds: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        proxy: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        """`ssl_context`: for https; default `ssl.create_default_context()` (the system's
        certificates, or those `SSL_CERT_FILE` names). `proxy`: `http://`, `https://` (a
        CONNECT tunnel) or `socks5://` (python-socks); `ca_file`: PEM certificates trusted
        beside the system's. ConfigError if either cannot be used."""
        self._limit = max_connections
        self._keepalive = keepalive_seconds
        self.max_body = max_response_bytes
        self._routes: dict[str, tuple[Route, bytes]] = {}
        self._writer = RequestWriter()
        self._ssl = ssl_context or (_trusting(ca_file) if ca_file else None)
        self._proxy = Proxy(proxy) if proxy else None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[Route, list[Connection]] = {}
        self._open = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new pool for `loop`; the previous loop's connections cannot be used in it (they
        were closed with it)."""
        self._loop = loop
        self._idle, self._open, self._waiting = {}, 0, collections.deque()

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeouts: Timeouts = _DEFAULT,
    ) -> Response:
        route, target = self._route(url)
        request = self._writer.build(method, target, route[3], headers, body)
        until = time.monotonic() + timeouts.total if timeouts.total else 0.0
        conn = await self._connection(route, timeouts, until)
        try:
            return await self._exchange(conn, request, method == "HEAD", timeouts, until)
        except BaseException:
            conn.close()
            self.release(conn)
            raise

    async def _exchange(
        self, conn: Connection, request: bytes, head: bool, timeouts: Timeouts, until: float
    ) -> Response:
        assert conn.transport is not None
        if conn.complete or head:  # (a new connection is ready for its first response)
            conn.begin(bodiless=head)
        conn.transport.write(request)
        first = timeouts.first_byte if timeouts.first_byte is not None else timeouts.read
        while not conn.headed:
            if conn.error is not None:
                raise conn.failure()
            try:
                await conn.wait(limit(first, until))
            except TimeoutError:
                raise UpstreamTimeout("the provider did not answer in time") from None
        return Response(conn, self, timeouts, until)

    def _route(self, url: str) -> tuple[Route, bytes]:
        known = self._routes.get(url)
        if known is None:
            known = parse_url(url)
            if len(self._routes) > 256:
                self._routes.clear()
            self._routes[url] = known
        return known

    async def _connection(self, route: Route, timeouts: Timeouts, until: float) -> Connection:
        """A kept-alive connection to `route` if one is idle and alive, else a new one
        (waiting, within the connect timeout, while `max_connections` are open and busy)."""
        while True:
            idle = self._idle.get(route)
            now = time.monotonic()
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to be stale
                if self._alive(conn, now):
                    return conn
                conn.close()
                self._open -= 1
            loop = asyncio.get_running_loop()  # (not on the path above: it costs a syscall)
            if loop is not self._loop:
                self._bind(loop)
                continue
            if self._open < self._limit or self._evict():
                break
            await self._wait_turn(limit(timeouts.connect, until))
        self._open += 1
        try:
            return await self._connect(route, timeouts, until)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def _alive(self, conn: Connection, now: float) -> bool:
        """Not closed, not idle too long, and (idle over a second) nothing to read: a socket
        that is readable while idle was closed by the server or sent what no one asked for."""
        if conn.closed or now - conn.idle_since >= self._keepalive:
            return False
        if conn.loop.is_closed():  # made in an earlier event loop (the caller starts anew)
            return False
        if now - conn.idle_since < _CHECK_IDLE_AFTER or conn.transport is None:
            return True
        sock = conn.transport.get_extra_info("socket")
        return sock is None or not _readable(sock.fileno())

    async def _wait_turn(self, seconds: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        timer = None if seconds is None else loop.call_later(seconds, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            error = UpstreamConnectError(
                f"no connection to the provider came free in time ({self._limit} are busy)",
                code=POOL_EXHAUSTED,
            )
            error.status = 503
            raise error from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, then cancelled: the turn goes to the next
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _connect(self, route: Route, timeouts: Timeouts, until: float) -> Connection:
        host, port, tls, _ = route
        loop = asyncio.get_running_loop()
        context = None
        if tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(limit(timeouts.connect, until)):
                if self._proxy is not None:
                    return await self._proxy.open(route, context)
                _, conn = await loop.create_connection(
                    lambda: Connection(route, loop), host, port, ssl=context
                )
        except TimeoutError:
            raise UpstreamTimeout("the provider did not answer in time") from None
        except ssl.SSLError as exc:
            raise UpstreamConnectError(f"could not connect: TLS: {exc.reason or exc}") from None
        except OSError as exc:
            raise UpstreamConnectError(f"could not connect: {exc.strerror or exc}") from None
        return conn

    def release(self, conn: Connection) -> None:
        """The response is done with `conn`: back to the pool when it can take another
        request, else closed and counted as gone. Called once per response."""
        if conn.loop is not self._loop:
            conn.close()  # a connection of a pool let go (another event loop's)
            return
        if conn.closed or self._closed or not conn.complete or not conn.keep_alive:
            conn.close()
            self._open -= 1
            self._wake_one()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.route, []).append(conn)
        if self._waiting:
            self._wake_one()

    def _evict(self) -> bool:
        """Close one idle connection (to another host) to make room; False if none."""
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()
                self._open -= 1
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        """Close the idle connections; requests waiting for one get UpstreamConnectError."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamConnectError("the upstream client was closed"))


def _trusting(ca_file: str) -> ssl.SSLContext:
    """The system's trust store and the certificates in `ca_file`."""
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {ca_file}: {exc}") from None
    return context


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
