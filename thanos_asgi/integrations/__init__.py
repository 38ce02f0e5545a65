"""Thin adapters that put the gateway inside a host framework's app.

    thanos_asgi.integrations.fastapi     mount(app, gateway), gateway_dependency(gateway)
    thanos_asgi.integrations.starlette   mount("/ai", gateway) -> Mount
    thanos_asgi.integrations.django      ai_dispatcher(django_app, thanos_app), session_key_id

Each of those modules imports its framework; this package and `thanos_asgi` import none.

Hosts do not forward lifespan events to mounted apps, so the gateway starts lazily on its
first request (health checks, upstream connection pools). To close it cleanly when the host
stops, enter `lifespan(gateway)` (or `async with gateway:`) in the host's own lifespan.
"""

from thanos_asgi.integrations._common import (
    GatewayLifespan,
    KeyIdHook,
    KeyIdMiddleware,
    lifespan,
    mounted_scope,
)

__all__ = ["GatewayLifespan", "KeyIdHook", "KeyIdMiddleware", "lifespan", "mounted_scope"]
