"""The upstream transport: one small interface, three engines.

Providers send requests through a `Transport`. Production uses `H1Transport` (`_h1.py`: a lean
HTTP/1.1 client on asyncio protocols and httptools, pooled and kept alive; on this machine a
completion through it costs ~40% fewer instructions than through aiohttp's client, which was
itself 8x httpx's default transport at saturation). `AiohttpTransport` remains for those who
want aiohttp's client; tests and users who want httpx features use
`HttpxTransport(httpx.AsyncClient(...))`, which also takes `httpx.MockTransport` for replaying
recordings. All raise only the exceptions in `thanos_asgi.exceptions`
(`UpstreamConnectError`, `UpstreamTimeout`, `UpstreamProtocolError`), with `provider` left
empty for the adapter to fill in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .exceptions import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    import aiohttp
    import httpx


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; None means no limit.

    `first_byte` bounds the wait for the response to start, `read` every silence after it,
    `total` the whole exchange including reading a stream to its end.
    """

    connect: float | None = 10.0
    read: float | None = 600.0
    total: float | None = None
    first_byte: float | None = None


class UpstreamResponse(Protocol):
    status: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> UpstreamResponse:
        """Send a request and return once the status and headers have arrived."""
        ...

    async def aclose(self) -> None: ...


def _first_byte(timeouts: Timeouts) -> asyncio.Timeout | contextlib.nullcontext[None]:
    """A deadline for the response to start (its expiry maps to UpstreamTimeout); none when
    the read timeout, which also runs until the response starts, is as short."""
    limit = timeouts.first_byte
    if limit is None or (timeouts.read is not None and timeouts.read <= limit):
        return _NO_DEADLINE
    return asyncio.timeout_at(asyncio.get_running_loop().time() + limit)


_NO_DEADLINE = contextlib.nullcontext()


# -- aiohttp ---------------------------------------------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            with _aiohttp_errors():
                return await self._response.read()
        finally:
            self._response.release()

    def iter_bytes(self) -> AsyncIterator[bytes]:
        return _AiohttpChunks(self._response)

    async def aclose(self) -> None:
        if not self._response.closed:
            # a response not read to the end cannot return its connection to the pool
            self._response.close()


class _AiohttpChunks:
    """The body as it arrives: an iterator object, one await per chunk (no generator)."""

    __slots__ = ("_content", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content

    def __aiter__(self) -> _AiohttpChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            data = await self._content.readany()
        except Exception as exc:
            mapped = _aiohttp_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        if not data:  # the end: the connection goes back to the pool
            self._response.release()
            raise StopAsyncIteration
        return data


class _aiohttp_errors:
    """Map aiohttp and asyncio errors onto ours (httpx's `map_httpcore_exceptions` idea)."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, Exception) and (mapped := _aiohttp_error(exc)) is not exc:
            raise mapped from exc


def _aiohttp_error(exc: Exception) -> Exception:
    """Ours for an aiohttp or asyncio error; any other exception as it is."""
    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout("the provider did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientOSError):
        return UpstreamConnectError(f"could not connect: {exc.strerror or exc}")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamProtocolError("the provider closed the connection mid-response")
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientConnectionError):
        return UpstreamProtocolError(f"bad response from the provider: {exc}")
    return exc


@functools.lru_cache(maxsize=64)
def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    import aiohttp

    return aiohttp.ClientTimeout(
        total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
    )


class AiohttpTransport:
    """Pooled aiohttp session, created lazily inside the running event loop."""

    def __init__(self, *, max_connections: int = 1000, keepalive_seconds: float = 60.0) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[int, tuple[Timeouts, aiohttp.ClientTimeout]] = {}

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",), trust_env=False
        )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> UpstreamResponse:

        session = self._session or self._open()
        known = self._timeouts.get(id(timeouts))  # (a Timeouts hashes in Python: ~1 us)
        if known is None or known[0] is not timeouts:
            if len(self._timeouts) > 64:  # a caller making Timeouts per request
                self._timeouts.clear()
            known = self._timeouts[id(timeouts)] = (timeouts, _client_timeout(timeouts))
        request = session.request(
            method, url, headers=headers, data=body, timeout=known[1], allow_redirects=False
        )
        limit = timeouts.first_byte
        try:  # no context manager unless needed: each costs calls on every request
            if limit is None or (timeouts.read is not None and timeouts.read <= limit):
                response = await request
            else:  # (aiohttp's sock_read also runs until the response starts)
                async with asyncio.timeout(limit):
                    response = await request
        except Exception as exc:
            mapped = _aiohttp_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- httpx -----------------------------------------------------------------------------------


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            with _httpx_errors():
                return await self._response.aread()
        finally:
            await self._response.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for data in self._response.aiter_bytes():
                yield data

    async def aclose(self) -> None:
        await self._response.aclose()


class _httpx_errors:
    def __enter__(self) -> None:
        return None

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None:
            return
        import httpx

        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            raise UpstreamTimeout("the provider did not answer in time") from exc
        if isinstance(exc, httpx.ConnectError):
            raise UpstreamConnectError(f"could not connect: {exc}") from exc
        if isinstance(exc, httpx.TransportError | httpx.DecodingError):
            raise UpstreamProtocolError(f"bad response from the provider: {exc}") from exc


class HttpxTransport:
    """Any `httpx.AsyncClient` (including one over `httpx.MockTransport`) as a transport."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> UpstreamResponse:
        import httpx

        timeout = httpx.Timeout(timeouts.total, connect=timeouts.connect, read=timeouts.read)
        request = self.client.build_request(
            method, url, headers=dict(headers), content=body, timeout=timeout
        )
        with _httpx_errors():
            async with _first_byte(timeouts):
                response = await self.client.send(request, stream=True)
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self.client.aclose()
