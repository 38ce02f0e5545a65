"""Assembling the parts: `build_app` folds middleware around ThanosApp, `LazyApp` is the
ready-made `thanos_asgi.frontends.app` that finds its config on first use (DESIGN section 4), and
`Reloadable` swaps in a gateway built from a re-read config (`thanos serve` on SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from thanos_asgi.core.gateway import Gateway
from thanos_asgi.exceptions import ConfigError
from thanos_asgi.frontends.admin import OPEN_PATHS as ADMIN_OPEN_PATHS
from thanos_asgi.frontends.admin.config import RELOAD
from thanos_asgi.frontends.app import ThanosApp
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.frontends.middleware import ErrorMiddleware, RequestIdMiddleware
from thanos_asgi.frontends.middleware.access_log import AccessLogMiddleware
from thanos_asgi.frontends.middleware.auth import ADMIN_PATHS, OPEN_PATHS, AuthMiddleware
from thanos_asgi.frontends.middleware.ratelimit import RateLimitMiddleware
from thanos_asgi.governance.keys import KeyRing, KeyStore

if TYPE_CHECKING:
    from thanos_asgi.config import Config

Middleware = Callable[[ASGIApp], ASGIApp]
_log = logging.getLogger("thanos_asgi")


def default_middleware(gateway: Gateway, keyring: KeyRing | None = None) -> list[Middleware]:
    """Request ids, OpenTelemetry spans (with `[server] tracing`), access log, client keys
    (open when none exist; `/metrics` needs an admin key when they do) and, where limits
    exist, rate limits."""
    server = gateway.config.server
    if keyring is None:
        store = KeyStore(server.key_store) if server.key_store else None
        keyring = KeyRing(server.keys, store)
    auth = partial(
        AuthMiddleware,
        keyring=keyring,
        open_paths=(*OPEN_PATHS, *ADMIN_OPEN_PATHS),  # the admin API checks its callers itself
        admin_paths=(*ADMIN_PATHS, "/metrics"),
    )
    stack: list[Middleware] = [RequestIdMiddleware, AccessLogMiddleware, auth]
    if server.tracing:  # right inside the request id, so refused requests are traced too
        stack.insert(1, _tracing())
    if server.rpm_per_ip or keyring.store is not None or any(k.rpm or k.tpm for k in server.keys):
        limiter = partial(RateLimitMiddleware, state=gateway.state, rpm_per_ip=server.rpm_per_ip)
        stack.append(limiter)
    return stack


def _tracing() -> Middleware:
    try:
        from thanos_asgi.frontends.middleware.tracing import TracingMiddleware
    except ImportError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        raise ConfigError(
            "[server] tracing needs OpenTelemetry: pip install 'thanos-asgi[otel]'"
        ) from exc
    return TracingMiddleware


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


def _let_go(generation: _Generation) -> None:
    """One request or call is done with `generation`; the last one wakes a pending retire."""
    generation.active -= 1
    if not generation.active and generation.idle is not None:
        generation.idle.set()


class Reloadable:
    """Serves the newest app `load` has given; `reload()` makes another from a fresh config.

    An app is built by `build_app(Gateway(load()))`; the new gateway keeps the state backend
    (rate windows, budget spend) of the one it replaces unless `[state]` changed. When loading
    or building fails, the error is logged and the current app keeps serving. A replaced
    gateway is closed once the requests it was serving are done, or after `grace` seconds.
    Lifespan events are answered here: shutdown closes the current gateway. With
    `reload_signal` (SIGHUP), the signal calls `reload()` while the server runs.
    """

    def __init__(
        self,
        load: Callable[[], Config],
        *,
        gateway: Gateway | None = None,
        grace: float = 30.0,
        reload_signal: int | None = None,
    ) -> None:
        """`gateway`, when given, serves first; otherwise `load` is called now."""
        self._load = load
        self._current = _Generation(gateway or Gateway(load()))
        self.grace = grace
        self.reload_signal = reload_signal
        self._retiring: dict[asyncio.Task[None], _Generation] = {}

    @property
    def gateway(self) -> Gateway:
        return self._current.gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        scope[RELOAD] = self.reload  # for `POST /admin/config/reload`
        generation = self._current  # `_holding`, inlined: no generator and context per request
        generation.active += 1
        try:
            await generation.app(scope, receive, send)
        finally:
            _let_go(generation)

    @contextlib.contextmanager
    def using(self) -> Iterator[Gateway]:
        """The current gateway, not closed by a reload before the block ends (gRPC calls)."""
        with self._holding() as generation:
            yield generation.gateway

    @contextlib.contextmanager
    def _holding(self) -> Iterator[_Generation]:
        generation = self._current
        generation.active += 1
        try:
            yield generation
        finally:
            _let_go(generation)

    def reload(self) -> bool:
        """Build from a freshly loaded config and serve it; False (logged) if that failed."""
        try:
            fresh = _Generation(self._successor(self._load()))
        except ConfigError as exc:
            _log.error("config reload refused, still serving the previous config: %s", exc)
            return False
        except Exception:
            _log.exception("config reload failed, still serving the previous config")
            return False
        old, self._current = self._current, fresh
        old.gateway.owns_state = old.gateway.state is not fresh.gateway.state
        old.idle = asyncio.Event()
        if not old.active:
            old.idle.set()
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring[task] = old
        task.add_done_callback(self._retiring.pop)
        _log.info("config reloaded; providers: %s", ", ".join(fresh.gateway.providers) or "none")
        return True

    def _successor(self, config: Config) -> Gateway:
        """The gateway for `config`: on the current one's state backend when `config` names
        the same store, so rate windows and month-to-date spend survive the reload."""
        current = self.gateway
        same = config.state == current.config.state
        return Gateway(config, state=current.state if same else None)

    async def _retire(self, old: _Generation) -> None:
        assert old.idle is not None
        try:
            await asyncio.wait_for(old.idle.wait(), self.grace)
        except TimeoutError:
            _log.warning("closing the previous gateway with %d requests still open", old.active)
        await old.gateway.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.reload_signal is not None:
                    loop.add_signal_handler(self.reload_signal, self.reload)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.reload_signal is not None:
                    loop.remove_signal_handler(self.reload_signal)
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Close every gateway: once the server has drained (lifespan shutdown)."""
        for old in self._retiring.values():
            assert old.idle is not None
            old.idle.set()  # the server has drained: close retired gateways now
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._current.gateway.aclose()


class _Generation:
    """One gateway, its app, and how many requests it is serving."""

    __slots__ = ("active", "app", "gateway", "idle")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.app = build_app(gateway)
        self.active = 0
        self.idle: asyncio.Event | None = None  # set once retired and idle


def _from_environment() -> ASGIApp:
    from thanos_asgi.config import load_config

    return build_app(Gateway(with_local_files(load_config(env=os.environ), os.environ)))


def with_local_files(config: Config, env: Mapping[str, str]) -> Config:
    """Put the usage ledger, stored responses, key store and login tokens in the user's data
    dir unless the config says where.

    The key store is used only if `thanos keys create` has made it."""
    import msgspec

    data = Path(
        env.get("XDG_DATA_HOME") or Path(env.get("HOME", "~")).expanduser() / ".local/share"
    )
    folder = data / "thanos"
    cost, server, responses = config.cost, config.server, config.responses
    if cost.track_usage and not cost.ledger_path:
        cost = msgspec.structs.replace(cost, ledger_path=str(folder / "usage.db"))
    if not responses.store_path:
        responses = msgspec.structs.replace(responses, store_path=str(folder / "responses.db"))
    if not server.key_store and (folder / "keys.db").exists():
        server = msgspec.structs.replace(server, key_store=str(folder / "keys.db"))
    logins = str(folder / "logins")  # where `thanos auth login` keeps tokens without a keyring
    providers = {
        name: p if p.token_dir else msgspec.structs.replace(p, token_dir=logins)
        for name, p in config.providers.items()
    }
    return msgspec.structs.replace(
        config, cost=cost, server=server, providers=providers, responses=responses
    )
