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
import os
import time
from functools import partial
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from thanos_asgi import Gateway, RequestIdMiddleware
from thanos_asgi._http import ASGIApp, Message, Receive, Scope, Send
from thanos_asgi.config import Config, load_config
from thanos_asgi.integrations.starlette import lifespan, mount
from thanos_asgi.keys import KeyRing
from thanos_asgi.middleware.auth import AuthMiddleware
from thanos_asgi.middleware.ratelimit import RateLimitMiddleware
from thanos_asgi.stack import Middleware


def example_config() -> Config:
    """The file THANOS_CONFIG names, else a thanos.toml beside this file, else the usual
    search (./thanos.toml, ~/.config/thanos/config.toml, ...; with no file at all: Ollama on
    localhost plus every provider whose API key variable is set)."""
    beside = Path(__file__).with_name("thanos.toml")
    if os.environ.get("THANOS_CONFIG") or not beside.is_file():
        return load_config(env=os.environ)
    return load_config(beside, env=os.environ)


log = logging.getLogger("examples.starlette_stack")


class ServerTimingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                timing = f"gateway;dur={took:.1f}".encode()
                message["headers"] = [*message.get("headers", ()), (b"server-timing", timing)]
            await send(message)

        await self.app(scope, receive, send_timed)


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("thanos.request_id", "-")
        key_id = (scope.get("thanos.auth") or {}).get("key_id") or "anonymous"
        log.info("%s %s request=%s key=%s", scope["method"], scope["path"], request_id, key_id)
        audit = f"{request_id} {key_id}".encode("latin-1", "replace")

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-audit", audit)]
            await send(message)

        await self.app(scope, receive, send_audited)


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("starlette host; the gateway is at /ai/v1\n")


gateway = Gateway(example_config())
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
