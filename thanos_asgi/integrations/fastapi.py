"""FastAPI: mount the gateway, call it from your own routes, close it with your app.

    gateway = Gateway(load_config(env=os.environ))
    app = FastAPI(lifespan=lifespan(gateway))
    mount(app, gateway, path="/ai")                     # OpenAI API at /ai/v1/...
                                                        # (and ThanosError -> its status)

    get_gateway = gateway_dependency(gateway)

    @app.post("/summary")
    async def summary(text: str, gw: Annotated[Gateway, Depends(get_gateway)]) -> str: ...

FastAPI does not run dependencies for mounted apps. To protect the gateway with the host's
own auth, pass them: `mount(app, gateway, dependencies=[Depends(current_user)])`; the gateway
is then served by a catch-all route below `path` that runs them first (401/403 as the host
answers them). A dependency may name the client for the gateway's accounting by setting
`request.scope["thanos.auth"] = {"key_id": ..., "policy": None}`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import FastAPI
from fastapi.params import Depends
from starlette.responses import Response

from thanos_asgi.core.gateway import Gateway
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.frontends.stack import Middleware, build_app
from thanos_asgi.integrations._common import (
    GatewayLifespan,
    lifespan,
    mounted_scope,
    normalise_prefix,
)
from thanos_asgi.integrations.starlette import error_response

__all__ = ["GatewayLifespan", "add_error_handler", "gateway_dependency", "lifespan", "mount"]

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def mount(
    app: FastAPI,
    gateway: Gateway,
    *,
    path: str = "/ai",
    middleware: Sequence[Middleware] | None = None,
    dependencies: Sequence[Depends] | None = None,
) -> ASGIApp:
    """Serve `build_app(gateway, middleware=middleware)` below `path`; returns that app.
    ThanosErrors raised in the host's own routes get their status too (`add_error_handler`)."""
    add_error_handler(app)
    prefix = normalise_prefix(path)
    gateway_app = build_app(gateway, middleware=middleware)
    if not dependencies:
        app.mount(prefix, gateway_app, name="thanos")
        return gateway_app

    async def thanos() -> Response:
        return _Mounted(gateway_app, prefix)

    app.add_api_route(
        prefix + "/{path:path}",
        thanos,
        methods=METHODS,
        dependencies=list(dependencies),
        include_in_schema=False,
        name="thanos",
    )
    return gateway_app


def add_error_handler(app: FastAPI) -> None:
    """Answer a ThanosError raised in the app's routes (a route calling `Gateway.chat` with an
    unknown model: 404, a spent budget: 429, ...) as the gateway would, not with a 500. A
    handler of the app's own for ThanosError is kept."""
    if ThanosError not in app.exception_handlers:
        app.add_exception_handler(ThanosError, error_response)


def gateway_dependency(gateway: Gateway) -> Callable[[], Gateway]:
    """A dependency giving routes the gateway: `gw: Annotated[Gateway, Depends(dep)]`.
    Keep the returned callable to override it in tests (`app.dependency_overrides[dep]`)."""

    def get_gateway() -> Gateway:
        return gateway

    return get_gateway


class _Mounted(Response):
    """The route's answer: hand the request to the gateway app, as a Mount would."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        super().__init__()
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(mounted_scope(scope, self.prefix) or scope, receive, send)
        if self.background is not None:
            await self.background()
