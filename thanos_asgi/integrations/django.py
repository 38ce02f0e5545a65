"""Django: one ASGI app sending `/ai` to the gateway and everything else to Django.

    # asgi.py
    django_app = get_asgi_application()
    gateway = Gateway(load_config(env=os.environ))
    application = ai_dispatcher(django_app, build_app(gateway), key_id=session_key_id)

The gateway sees the request as mounted at the prefix (`path` whole, `root_path` + prefix).
Django's ASGI handler does not take lifespan events, so they go to the gateway app, which
closes the gateway on shutdown; without them it starts lazily on its first request.

`key_id` lets Django's authentication name the client (see `KeyIdMiddleware`):
`session_key_id` gives `django:<username>` for a request whose session cookie belongs to a
logged-in user, and None otherwise (the gateway's own client keys then decide).
"""

from __future__ import annotations

from importlib import import_module

from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.integrations._common import (
    KeyIdHook,
    KeyIdMiddleware,
    mounted_scope,
    normalise_prefix,
)

__all__ = ["AIDispatcher", "ai_dispatcher", "session_key_id"]


class AIDispatcher:
    def __init__(
        self,
        django_app: ASGIApp,
        thanos_app: ASGIApp,
        *,
        prefix: str = "/ai",
        key_id: KeyIdHook | None = None,
    ) -> None:
        self.django_app = django_app
        self.thanos_app = (
            thanos_app if key_id is None else KeyIdMiddleware(thanos_app, key_id=key_id)
        )
        self.prefix = normalise_prefix(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.thanos_app(scope, receive, send)
            return
        mounted = mounted_scope(scope, self.prefix)
        if mounted is None:
            await self.django_app(scope, receive, send)
        else:
            await self.thanos_app(mounted, receive, send)


def ai_dispatcher(
    django_app: ASGIApp,
    thanos_app: ASGIApp,
    prefix: str = "/ai",
    *,
    key_id: KeyIdHook | None = None,
) -> AIDispatcher:
    return AIDispatcher(django_app, thanos_app, prefix=prefix, key_id=key_id)


async def session_key_id(scope: Scope) -> str | None:
    """`django:<username>` when the session cookie belongs to a logged-in user, else None.

    Uses Django's session engine and `aget_user`, so the session's auth hash is checked as
    Django's AuthenticationMiddleware would."""
    from asgiref.sync import sync_to_async
    from django.conf import settings  # type: ignore[import-untyped]
    from django.contrib.auth import aget_user  # type: ignore[import-untyped]
    from django.db import close_old_connections  # type: ignore[import-untyped]
    from django.http import HttpRequest  # type: ignore[import-untyped]

    session_id = _cookie(scope, settings.SESSION_COOKIE_NAME)
    if not session_id:
        return None
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_id)
    try:
        user = await aget_user(request)
    finally:
        await sync_to_async(close_old_connections)()
    return f"django:{user.get_username()}" if user.is_authenticated else None


def _cookie(scope: Scope, name: str) -> str | None:
    from django.http import parse_cookie

    for key, value in scope["headers"]:
        if key == b"cookie":
            found: str | None = parse_cookie(bytes(value).decode("latin-1")).get(name)
            if found:
                return found
    return None
