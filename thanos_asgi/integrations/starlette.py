"""Starlette: the gateway as a Mount in your routes, closed with your app; ThanosErrors
raised in your own routes (calling the Gateway) answered with their status.

    gateway = Gateway(load_config(env=os.environ))
    app = Starlette(
        routes=[Route("/", home), mount("/ai", gateway)],  # OpenAI API at /ai/v1/...
        lifespan=lifespan(gateway),
        exception_handlers=exception_handlers(),           # 404 for an unknown model, ...
    )

`middleware` is `build_app`'s: first = outermost, default `default_middleware(gateway)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from thanos_asgi.core.gateway import Gateway
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.errors import error_headers, openai_error
from thanos_asgi.frontends.stack import Middleware, build_app
from thanos_asgi.integrations._common import GatewayLifespan, lifespan, normalise_prefix

__all__ = ["GatewayLifespan", "error_response", "exception_handlers", "lifespan", "mount"]

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def mount(
    path: str,
    gateway: Gateway,
    *,
    middleware: Sequence[Middleware] | None = None,
    name: str = "thanos",
) -> Mount:
    app = build_app(gateway, middleware=middleware)
    return Mount(normalise_prefix(path), app=app, name=name)


async def error_response(request: Request, exc: Exception) -> Response:
    """A ThanosError as the gateway itself answers it: its status (404 for an unknown model,
    429 with Retry-After, 502 for a failing provider...), OpenAI's error shape, and the
    `x-thanos-*` headers of what was tried. Anything else is re-raised."""
    if not isinstance(exc, ThanosError):
        raise exc
    headers = error_headers(exc, request.scope)
    return Response(openai_error(exc), exc.status, headers=_text(headers))


def exception_handlers() -> dict[type[Exception], ExceptionHandler]:
    """For `Starlette(exception_handlers=...)` (or to merge into your own)."""
    return {ThanosError: error_response}


def _text(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
