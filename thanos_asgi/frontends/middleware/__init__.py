"""Pure ASGI middleware, each usable alone around any ASGI app."""

from thanos_asgi.frontends.middleware.access_log import AccessLogMiddleware
from thanos_asgi.frontends.middleware.auth import AuthMiddleware
from thanos_asgi.frontends.middleware.errors import ErrorMiddleware
from thanos_asgi.frontends.middleware.ratelimit import RateLimitMiddleware
from thanos_asgi.frontends.middleware.request_id import RequestIdMiddleware

__all__ = [
    "AccessLogMiddleware",
    "AuthMiddleware",
    "ErrorMiddleware",
    "RateLimitMiddleware",
    "RequestIdMiddleware",
]
