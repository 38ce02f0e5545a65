"""thanos-asgi: a universal AI gateway for Python, shipped as composable ASGI parts."""

from .app import ThanosApp
from .exceptions import ConfigError, ThanosError
from .gateway import Context, Gateway
from .middleware import ErrorMiddleware, RequestIdMiddleware
from .sse import EventSourceResponse
from .stack import LazyApp, build_app, default_middleware
from .transport import AiohttpTransport, HttpxTransport, Timeouts
from .types import ChatChunk, ChatRequest, ChatResponse, Message

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
        from ._h1 import H1Transport

        return H1Transport
    raise AttributeError(f"module 'thanos_asgi' has no attribute {name!r}")
