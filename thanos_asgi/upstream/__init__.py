"""The upstream layer: the `Transport` interface, its engines and stream framing.

`H1Transport` (the default engine, in `h1/`) is imported when first asked for: it loads
httptools and ssl, which `import thanos_asgi` does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thanos_asgi.upstream.aiohttp_engine import AiohttpTransport
from thanos_asgi.upstream.base import Timeouts, Transport, UpstreamResponse
from thanos_asgi.upstream.httpx_engine import HttpxTransport

if TYPE_CHECKING:
    from thanos_asgi.upstream.h1 import H1Transport

__all__ = [
    "AiohttpTransport",
    "H1Transport",
    "HttpxTransport",
    "Timeouts",
    "Transport",
    "UpstreamResponse",
]


def __getattr__(name: str) -> object:
    if name == "H1Transport":
        from thanos_asgi.upstream.h1 import H1Transport

        return H1Transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
