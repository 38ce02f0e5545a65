"""Pure ASGI middleware, each usable alone around any ASGI app."""

from .errors import ErrorMiddleware
from .request_id import RequestIdMiddleware

__all__ = ["ErrorMiddleware", "RequestIdMiddleware"]
