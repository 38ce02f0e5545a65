"""Assembling the parts: `build_app` folds middleware around ThanosApp, and `LazyApp` is the
ready-made `thanos_asgi.app` that finds its config on first use (DESIGN section 4).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ._http import ASGIApp, Receive, Scope, Send
from .app import ThanosApp
from .exceptions import ConfigError
from .gateway import Gateway
from .keys import KeyRing, KeyStore
from .middleware import ErrorMiddleware, RequestIdMiddleware
from .middleware.auth import AuthMiddleware
from .middleware.ratelimit import RateLimitMiddleware

if TYPE_CHECKING:
    from .config import Config

Middleware = Callable[[ASGIApp], ASGIApp]


def default_middleware(gateway: Gateway, keyring: KeyRing | None = None) -> list[Middleware]:
    """Request ids, client keys (open when none exist) and, where limits exist, rate limits."""
    server = gateway.config.server
    if keyring is None:
        store = KeyStore(server.key_store) if server.key_store else None
        keyring = KeyRing(server.keys, store)
    stack: list[Middleware] = [RequestIdMiddleware, partial(AuthMiddleware, keyring=keyring)]
    if server.rpm_per_ip or keyring.store is not None or any(k.rpm for k in server.keys):
        limiter = partial(RateLimitMiddleware, state=gateway.state, rpm_per_ip=server.rpm_per_ip)
        stack.append(limiter)
    return stack


def build_app(gateway: Gateway, *, middleware: Sequence[Middleware] | None = None) -> ASGIApp:
    """ThanosApp wrapped in `middleware` (first = outermost; default: `default_middleware`),
    all inside ErrorMiddleware."""
    app: ASGIApp = ThanosApp(gateway)
    for wrap in reversed(default_middleware(gateway) if middleware is None else middleware):
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

    return build_app(Gateway(with_local_files(load_config(env=os.environ), os.environ)))


def with_local_files(config: Config, env: Mapping[str, str]) -> Config:
    """Put the usage ledger and key store in the user's data dir unless the config says where.

    The key store is used only if `thanos keys create` has made it."""
    import msgspec

    data = Path(
        env.get("XDG_DATA_HOME") or Path(env.get("HOME", "~")).expanduser() / ".local/share"
    )
    folder = data / "thanos"
    cost, server = config.cost, config.server
    if cost.track_usage and not cost.ledger_path:
        cost = msgspec.structs.replace(cost, ledger_path=str(folder / "usage.db"))
    if not server.key_store and (folder / "keys.db").exists():
        server = msgspec.structs.replace(server, key_store=str(folder / "keys.db"))
    return msgspec.structs.replace(config, cost=cost, server=server)
