"""A Starlette app with the gateway at /ai and its middleware in an order of our own.

    uvicorn examples.starlette_stack.app:app --port 8000
    # OpenAI clients: base_url="http://127.0.0.1:8000/ai/v1"

The stack around ThanosApp, first = outermost (each is a plain ASGI middleware; swap,
drop or add layers by editing the list):

    ServerTimingMiddleware   ours: `server-timing: gateway;dur=<ms>`, time to the response start
    RequestIdMiddleware      `x-request-id`, and `scope["thanos.request_id"]` for the layers below
    AuthMiddleware           client keys from `[server] keys` (open when there are none)
    AuditMiddleware          ours: logs each request and answers `x-audit: <request id> <key id>`;
                             it sees both because it sits inside the two layers above
    RateLimitMiddleware      `[server] rpm_per_ip` and per-key `rpm`, when configured

Every layer adds its headers as the response starts, innermost first, so the response
carries `x-audit`, then `x-request-id`, then `server-timing`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from examples._config import example_config
from thanos_asgi import Gateway, RequestIdMiddleware
from thanos_asgi.frontends.asgi import ASGIApp, Message, Receive, Scope, Send
from thanos_asgi.frontends.middleware.auth import AuthMiddleware
from thanos_asgi.frontends.middleware.ratelimit import RateLimitMiddleware
from thanos_asgi.frontends.stack import Middleware
from thanos_asgi.governance.keys import KeyRing
from thanos_asgi.integrations.starlette import lifespan, mount

log = logging.getLogger("examples.starlette_stack")


class HTTPMiddleware:
    """A pure ASGI middleware that works on HTTP requests (`handle`) and passes every other
    scope type (lifespan, websocket) through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def adding_header(send: Send, name: bytes, value: Callable[[], bytes]) -> Send:
    """`send`, adding the header `name: value()` as the response starts (never touching the
    body, so streams pass straight through)."""

    async def send_with_header(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (name, value())]
        await send(message)

    return send_with_header


class ServerTimingMiddleware(HTTPMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()

        def timing() -> bytes:
            took = (time.perf_counter() - started) * 1000
            return f"gateway;dur={took:.1f}".encode()

        await self.app(scope, receive, adding_header(send, b"server-timing", timing))


class AuditMiddleware(HTTPMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = scope.get("thanos.request_id", "-")
        key_id = (scope.get("thanos.auth") or {}).get("key_id") or "anonymous"
        log.info("%s %s request=%s key=%s", scope["method"], scope["path"], request_id, key_id)
        audit = f"{request_id} {key_id}".encode("latin-1", "replace")
        await self.app(scope, receive, adding_header(send, b"x-audit", lambda: audit))


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("starlette host; the gateway is at /ai/v1\n")


gateway = Gateway(example_config(__file__))
server = gateway.config.server
middleware: list[Middleware] = [
    ServerTimingMiddleware,
    RequestIdMiddleware,
    partial(AuthMiddleware, keyring=KeyRing(server.keys)),
    AuditMiddleware,
    partial(RateLimitMiddleware, state=gateway.state, rpm_per_ip=server.rpm_per_ip),
]
app = Starlette(
    routes=[Route("/", home), mount("/ai", gateway, middleware=middleware)],
    lifespan=lifespan(gateway),
)
