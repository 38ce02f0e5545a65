"""An `httpx.AsyncClient` as a `Transport` (tests replay recordings via `httpx.MockTransport`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from thanos_asgi.upstream.base import Timeouts, UpstreamResponse, _first_byte

if TYPE_CHECKING:
    import httpx


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
