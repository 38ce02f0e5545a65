"""The upstream transport: one small interface, three engines.

Providers send requests through a `Transport`. Production uses `H1Transport` (`h1/`: a lean
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
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

# Run by the engine just before a request's task waits for its provider (set in that task's
# context; `thanos serve` sets it to write what the client's answer holds, so each stream
# event leaves before the wait for the next, not when the whole turn of the loop ends).
BEFORE_WAIT: ContextVar[Callable[[], None] | None] = ContextVar("before_wait", default=None)


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
