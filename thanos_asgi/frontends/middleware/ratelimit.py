"""RateLimitMiddleware: requests per minute per client key (or per client address).

It runs after AuthMiddleware: a key's `rpm` comes from `scope["thanos.auth"]["policy"]`;
without keys, `rpm_per_ip` limits each client address. Windows live in the shared state
backend, so several gateway processes on one Redis share one limit. Answers carry OpenAI's
`x-ratelimit-*-requests` headers; a refused request gets 429 with Retry-After. If the state
backend is unreachable the request is refused with 503 (unless `[state] fail_open`).
Tokens per minute are held by the gateway, which knows the request's size.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.asgi import (
    ASGIApp,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
)
from thanos_asgi.frontends.errors import send_error
from thanos_asgi.governance.accounting import request_subject, take_request
from thanos_asgi.governance.state import StateBackend, WindowResult


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, state: StateBackend, rpm_per_ip: int | None = None) -> None:
        self.app = app
        self.state = state
        self.rpm_per_ip = rpm_per_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        subject, limit = self._subject(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        try:
            result = await take_request(self.state, subject, limit)
        except ThanosError as exc:
            await send_error(scope, send, exc)
            return
        extra = _headers(result)

        def send_with_limits(message: Message) -> Awaitable[None]:  # see ErrorMiddleware
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            return send(message)

        await self.app(scope, receive, send_with_limits)

    def _subject(self, scope: Scope) -> tuple[str, int | None]:
        auth = scope.get("thanos.auth")
        client = scope.get("client") or ("unknown", 0)
        return request_subject(auth.get("policy") if auth else None, client[0], self.rpm_per_ip)


def _headers(result: WindowResult) -> Headers:
    return [
        (b"x-ratelimit-limit-requests", str(result.limit).encode()),
        (b"x-ratelimit-remaining-requests", str(max(result.limit - result.used, 0)).encode()),
        (b"x-ratelimit-reset-requests", f"{math.ceil(result.reset_after)}s".encode()),
    ]
