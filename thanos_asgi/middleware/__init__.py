"""Pure ASGI middleware, each usable alone around any ASGI app."""

from .access_log import AccessLogMiddleware
from .auth import AuthMiddleware
from .errors import ErrorMiddleware
from .ratelimit import RateLimitMiddleware
from .request_id import RequestIdMiddleware

__all__ = [
    "AccessLogMiddleware",
    "AuthMiddleware",
    "ErrorMiddleware",
    "RateLimitMiddleware",
    "RequestIdMiddleware",
]
