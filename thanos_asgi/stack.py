"""Assembling the parts: `build_app` folds middleware around ThanosApp, and `LazyApp` is the
ready-made `thanos_asgi.app` that finds its config on first use (DESIGN section 4).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ._http import ASGIApp, Receive, Scope, Send
from .app import ThanosApp
from .exceptions import ConfigError
from .gateway import Gateway
from .middleware import ErrorMiddleware, RequestIdMiddleware

Middleware = Callable[[ASGIApp], ASGIApp]
DEFAULT_MIDDLEWARE: tuple[Middleware, ...] = (RequestIdMiddleware,)


def build_app(gateway: Gateway, *, middleware: Sequence[Middleware] | None = None) -> ASGIApp:
    """ThanosApp wrapped in `middleware` (first = outermost), inside ErrorMiddleware."""
    app: ASGIApp = ThanosApp(gateway)
    for wrap in reversed(DEFAULT_MIDDLEWARE if middleware is None else middleware):
        app = wrap(app)
    return ErrorMiddleware(app)


class LazyApp:
    """An ASGI app that loads config and builds the gateway when it is first called."""

    def __init__(self, factory: Callable[[], ASGIApp] | None = None) -> None:
        self._factory = factory or _from_environment
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = self._factory()
            except ConfigError as exc:
                if scope["type"] != "lifespan":
                    raise
                await receive()
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        await self._app(scope, receive, send)


def _from_environment() -> ASGIApp:
    from .config import load_config

    return build_app(Gateway(load_config(env=os.environ)))
