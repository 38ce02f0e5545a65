"""aiohttp's client as a `Transport`, for those who want it (the floors in benchmarks use it).

Held to the same rules as `H1Transport`: it asks for `identity` and refuses an encoded body,
caps a body read whole at `max_response_bytes`, and keeps one session per event loop.
aiohttp is optional: `pip install 'thanos-asgi[aiohttp]'`."""

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
    __slots__ = ("_max", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, max_body: int) -> None:
        self._response, self._max = response, max_body
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding and encoding != "identity":
            response.close()
            raise UpstreamProtocolError(
                f"the provider sent a body encoded as {encoding!r}, which was not asked for"
            )

    async def read(self) -> bytes:
        response, parts, size = self._response, [], 0
        try:
            with _aiohttp_errors():
                async for data in response.content.iter_any():
                    size += len(data)
                    if size > self._max:
                        response.close()
                        raise UpstreamProtocolError(
                            f"the provider's answer exceeds {self._max} bytes"
                        )
                    parts.append(data)
        finally:
            response.release()
        return parts[0] if len(parts) == 1 else b"".join(parts)

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
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        error = UpstreamProtocolError("the provider closed the connection before answering")
        error.maybe_delivered = True
        return error
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamProtocolError("the provider closed the connection mid-response")
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientConnectionError):
        return UpstreamProtocolError(f"bad response from the provider: {exc}")
    return exc


# the framing and encoding are the client's to set; a caller's are left out
_FRAMING = frozenset(("content-length", "transfer-encoding", "accept-encoding"))


@functools.lru_cache(maxsize=64)
def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    import aiohttp

    return aiohttp.ClientTimeout(
        total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read
    )


class AiohttpTransport:
    """Pooled aiohttp session, created lazily inside the running event loop."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_seconds: float = 60.0,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if importlib.util.find_spec("aiohttp") is None:
            raise ImportError(
                "AiohttpTransport needs aiohttp, an optional dependency: "
                "pip install 'thanos-asgi[aiohttp]'"
            )
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._max_body = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[int, tuple[Timeouts, aiohttp.ClientTimeout]] = {}

    def _open(self) -> aiohttp.ClientSession:
        """A session for the running loop (one made in another loop cannot be used in it)."""
        import aiohttp

        self._loop = asyncio.get_running_loop()

        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Accept-Encoding": "identity"},
            skip_auto_headers=("User-Agent",),
            auto_decompress=False,
            trust_env=False,
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

        session = self._session
        if session is None or self._loop is None or self._loop.is_closed():
            session = self._open()  # (a closed loop: the session was made by an earlier run)
        known = self._timeouts.get(id(timeouts))  # (a Timeouts hashes in Python: ~1 us)
        if known is None or known[0] is not timeouts:
            if len(self._timeouts) > 64:  # a caller making Timeouts per request
                self._timeouts.clear()
            known = self._timeouts[id(timeouts)] = (timeouts, _client_timeout(timeouts))
        if any(name.lower() in _FRAMING for name in headers):
            headers = {k: v for k, v in headers.items() if k.lower() not in _FRAMING}
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
        except ValueError as exc:  # a header or URL aiohttp will not send
            raise UpstreamConnectError(f"could not send the request: {exc}") from None
        except Exception as exc:
            mapped = _aiohttp_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return _AiohttpResponse(response, self._max_body)

    async def aclose(self) -> None:
        if self._session is not None and self._loop is not None and not self._loop.is_closed():
            await self._session.close()
        self._session = None


# -- httpx -----------------------------------------------------------------------------------
