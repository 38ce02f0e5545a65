"""aiohttp's client as a `Transport`, for those who want it (the floors in benchmarks use it).

aiohttp is optional: `pip install 'thanos-asgi[aiohttp]'`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from thanos_asgi.upstream.base import Timeouts, UpstreamResponse

if TYPE_CHECKING:
    import aiohttp


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
        if importlib.util.find_spec("aiohttp") is None:
            raise ImportError(
                "AiohttpTransport needs aiohttp, an optional dependency: "
                "pip install 'thanos-asgi[aiohttp]'"
            )
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
