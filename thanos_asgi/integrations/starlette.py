"""Starlette: the gateway as a Mount in your routes, closed with your app.

    gateway = Gateway(load_config(env=os.environ))
    app = Starlette(
        routes=[Route("/", home), mount("/ai", gateway)],  # OpenAI API at /ai/v1/...
        lifespan=lifespan(gateway),
    )

`middleware` is `build_app`'s: first = outermost, default `default_middleware(gateway)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import Mount

from thanos_asgi.core.gateway import Gateway
from thanos_asgi.frontends.stack import Middleware, build_app
from thanos_asgi.integrations._common import GatewayLifespan, lifespan, normalise_prefix

__all__ = ["GatewayLifespan", "lifespan", "mount"]


def mount(
    path: str,
    gateway: Gateway,
    *,
    middleware: Sequence[Middleware] | None = None,
    name: str = "thanos",
) -> Mount:
    app = build_app(gateway, middleware=middleware)
    return Mount(normalise_prefix(path), app=app, name=name)
