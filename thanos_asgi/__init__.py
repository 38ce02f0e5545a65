"""thanos-asgi: a universal AI gateway for Python, shipped as composable ASGI parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from thanos_asgi.core.gateway import Context, Gateway
from thanos_asgi.exceptions import ConfigError, ThanosError
from thanos_asgi.frontends.app import ThanosApp
from thanos_asgi.frontends.middleware import ErrorMiddleware, RequestIdMiddleware
from thanos_asgi.frontends.sse import EventSourceResponse
from thanos_asgi.frontends.stack import LazyApp, build_app, default_middleware
from thanos_asgi.types import ChatChunk, ChatRequest, ChatResponse, Message
from thanos_asgi.upstream import AiohttpTransport, HttpxTransport, Timeouts

if TYPE_CHECKING:
    from thanos_asgi.upstream.h1 import H1Transport

__all__ = [
    "AiohttpTransport",
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "ConfigError",
    "Context",
    "ErrorMiddleware",
    "EventSourceResponse",
    "Gateway",
    "H1Transport",
    "HttpxTransport",
    "LazyApp",
    "Message",
    "RequestIdMiddleware",
    "ThanosApp",
    "ThanosError",
    "Timeouts",
    "app",
    "build_app",
    "default_middleware",
]

app = LazyApp()


def __getattr__(name: str) -> object:
    if name == "H1Transport":  # imported when asked for: it loads httptools and ssl
        from thanos_asgi.upstream.h1 import H1Transport

        return H1Transport
    raise AttributeError(f"module 'thanos_asgi' has no attribute {name!r}")
