"""A lean HTTP/1.1 client for the upstream data path: asyncio protocols, httptools' parser
(llhttp, the one uvicorn uses), and a keep-alive pool per host.

It does what the gateway needs and nothing else: one request at a time per connection, a body
given as bytes, the response read whole or chunk by chunk as it arrives (Content-Length,
chunked, or until the connection closes; gzip and deflate undone), TLS through the `ssl`
module with the system's trust store, and the four `Timeouts`. Per request it costs a few dozen
Python calls where aiohttp's client costs well over a hundred (benchmarks/README.md).

A kept-alive connection the server has closed meanwhile is noticed when it is taken from the
pool, or, when the close crosses the request, by the response ending before a single byte of it
arrived: then the request is sent once more on a new connection (as browsers and aiohttp do).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from thanos_asgi.exceptions import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from thanos_asgi.upstream.base import Timeouts
from thanos_asgi.upstream.h1._wire import Connection, Response, Route, Stale, limit

_DEFAULT = Timeouts()


def _parse(url: str) -> tuple[Route, bytes]:
    """(host, port, tls, the request line's end and the host header), and the target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UpstreamConnectError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamConnectError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    tls = parts.scheme == "https"
    port = port or (443 if tls else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port != (443 if tls else 80):
        host = f"{host}:{port}"
    try:
        encoded = host.encode("ascii")
    except UnicodeEncodeError:
        encoded = host.encode("idna")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    route: Route = (parts.hostname, port, tls, b" HTTP/1.1\r\nhost: " + encoded + b"\r\n")
    return route, path.encode("utf-8")


def _request(
    method: str, target: bytes, host: bytes, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """The request's bytes, to go out in one write; no content-length without a body."""
    head = [method.encode("ascii"), b" ", target, host]
    try:
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise UpstreamConnectError(f"the header '{name.strip()}' holds a line break")
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
    except UnicodeEncodeError:
        raise UpstreamConnectError("a header holds characters HTTP/1.1 cannot carry") from None
    if body is None:
        head.append(b"\r\n")
        return b"".join(head)
    head.append(b"content-length: %d\r\n\r\n" % len(body))
    head.append(body)
    return b"".join(head)


class H1Transport:
    """Pooled HTTP/1.1 connections, kept alive `keepalive_seconds` while idle; at most
    `max_connections` open at once (more requests wait for one)."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_seconds: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: for https; default `ssl.create_default_context()` (the system's
        certificates, or those `SSL_CERT_FILE` names)."""
        self._limit = max_connections
        self._keepalive = keepalive_seconds
        self._idle: dict[Route, list[Connection]] = {}
        self._routes: dict[str, tuple[Route, bytes]] = {}
        self._open = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl = ssl_context
        self._closed = False

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
        request = _request(method, target, route[3], headers, body)
        until = time.monotonic() + timeouts.total if timeouts.total else 0.0
        for attempt in range(2):
            conn, reused = await self._connection(route, timeouts, until)
            try:
                return await self._exchange(conn, request, timeouts, until, reused)
            except Stale:
                conn.close()
                self.release(conn)
                if not reused or attempt:
                    raise UpstreamProtocolError(
                        "the provider closed the connection before answering"
                    ) from None
            except BaseException:
                conn.close()
                self.release(conn)
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, conn: Connection, request: bytes, timeouts: Timeouts, until: float, reused: bool
    ) -> Response:
        assert conn.transport is not None
        if reused:
            conn.begin()
        conn.transport.write(request)
        first = timeouts.first_byte if timeouts.first_byte is not None else timeouts.read
        while not conn.headed:
            if conn.error is not None:
                raise conn.error
            try:
                await conn.wait(limit(first, until))
            except TimeoutError:
                raise UpstreamTimeout("the provider did not answer in time") from None
        if conn.error is not None and not conn.headed:
            raise conn.error
        return Response(conn, self, timeouts, until)

    def _route(self, url: str) -> tuple[Route, bytes]:
        known = self._routes.get(url)
        if known is None:
            known = _parse(url)
            if len(self._routes) > 256:
                self._routes.clear()
            self._routes[url] = known
        return known

    async def _connection(
        self, route: Route, timeouts: Timeouts, until: float
    ) -> tuple[Connection, bool]:
        """A kept-alive connection to `route` if one is idle, else a new one (waiting while
        `max_connections` are open and none of them idle); and whether it was reused."""
        while True:
            idle = self._idle.get(route)
            now = time.monotonic()
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to be stale
                if not conn.closed and now - conn.idle_since < self._keepalive:
                    return conn, True
                conn.close()
                self._open -= 1
            if self._open < self._limit or self._evict():
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the turn goes to the next
                raise
        self._open += 1
        try:
            return await self._connect(route, timeouts, until), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self, route: Route, timeouts: Timeouts, until: float) -> Connection:
        host, port, tls, _ = route
        loop = asyncio.get_running_loop()
        context = None
        if tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(limit(timeouts.connect, until)):
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
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
