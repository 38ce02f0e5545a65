"""What every integration shares: the host-side lifespan, mount scopes, host-supplied key ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from thanos_asgi.core.gateway import Gateway
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send, route_path

KeyIdHook = Callable[[Scope], Awaitable[str | None]]
"""Given a request's scope, the id of the client the host has authenticated, or None."""


class GatewayLifespan:
    """Opens the gateway with the host app and closes it (upstream clients, health checks,
    state, ledger) when the host shuts down. Both a lifespan factory and a context manager:

        app = FastAPI(lifespan=lifespan(gateway))         # or Starlette(lifespan=...)

        @asynccontextmanager
        async def my_lifespan(app):                        # the host's own lifespan
            async with lifespan(gateway):
                yield
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __call__(self, app: object) -> GatewayLifespan:
        return self

    async def __aenter__(self) -> None:
        await self.gateway.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.gateway.aclose()


def lifespan(gateway: Gateway) -> GatewayLifespan:
    return GatewayLifespan(gateway)


def mounted_scope(scope: Scope, prefix: str) -> Scope | None:
    """The scope an app mounted at `prefix` sees, as Starlette's Mount makes it: `path` stays
    whole and `root_path` grows by `prefix`. None when the path is not below `prefix`."""
    path = route_path(scope)
    if path != prefix and not path.startswith(prefix + "/"):
        return None
    return {**scope, "root_path": scope.get("root_path", "") + prefix}


def normalise_prefix(prefix: str) -> str:
    if not prefix.startswith("/") or prefix == "/":
        raise ValueError(f"a mount prefix starts with '/' and names a path, not {prefix!r}")
    return prefix.rstrip("/")


class KeyIdMiddleware:
    """Lets the host's own authentication name the client: when `key_id(scope)` returns an
    id, it goes into `scope["thanos.auth"]` (no key policy), AuthMiddleware then leaves the
    request alone, and usage, limits and the ledger are kept under that id. When it returns
    None the request goes on unchanged, so the gateway's own client keys (if any) apply."""

    def __init__(self, app: ASGIApp, *, key_id: KeyIdHook) -> None:
        self.app = app
        self.key_id = key_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "thanos.auth" not in scope:
            key_id = await self.key_id(scope)
            if key_id is not None:
                scope["thanos.auth"] = {"key_id": key_id, "policy": None}
        await self.app(scope, receive, send)
