"""RateLimitMiddleware: requests per minute per client key (or per client address).

It runs after AuthMiddleware: a key's `rpm` comes from `scope["thanos.auth"]["policy"]`;
without keys, `rpm_per_ip` limits each client address. Windows live in the shared state
backend, so several gateway processes on one Redis share one limit. A refused request gets
429 with Retry-After. If the state backend is unreachable the request is refused with 503
(unless `[state] fail_open`).

Tokens per minute are held by the gateway, which knows the request's size; it notes that
window in the request's `Quota` (`scope["thanos.quota"]`, which the endpoints hand to the
gateway). Every answer to a key with limits, 429s included, carries OpenAI's headers for the
windows it was counted in: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable

from thanos_asgi.context import Quota
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
from thanos_asgi.governance.state import StateBackend
from thanos_asgi.governance.windows import request_subject, take_request


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, state: StateBackend, rpm_per_ip: int | None = None) -> None:
        self.app = app
        self.state = state
        self.rpm_per_ip = rpm_per_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = scope.get("thanos.auth")
        policy = auth.get("policy") if auth else None
        client = scope.get("client") or ("unknown", 0)
        subject, limit = request_subject(policy, client[0], self.rpm_per_ip)
        if limit is None and (policy is None or policy.tpm is None):
            await self.app(scope, receive, send)
            return
        quota = scope["thanos.quota"] = Quota()
        try:
            if limit is not None:
                await take_request(self.state, subject, limit, quota)
        except ThanosError as exc:
            await send_error(scope, send, exc, quota_headers(quota))
            return

        def send_with_limits(message: Message) -> Awaitable[None]:  # see ErrorMiddleware
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *quota_headers(quota)]
            return send(message)

        await self.app(scope, receive, send_with_limits)


def quota_headers(quota: Quota) -> Headers:
    """OpenAI's `x-ratelimit-*` headers for the windows a request was counted in."""
    headers: Headers = []
    for name, window in ((b"requests", quota.requests), (b"tokens", quota.tokens)):
        if window is not None:
            limit, remaining, reset = window
            headers += [
                (b"x-ratelimit-limit-" + name, str(limit).encode()),
                (b"x-ratelimit-remaining-" + name, str(remaining).encode()),
                (b"x-ratelimit-reset-" + name, _duration(reset)),
            ]
    return headers


def _duration(seconds: float) -> bytes:
    """A reset time as OpenAI writes it: "20ms", "1s", "6m0s"."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 0)}ms".encode()
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return (f"{minutes}m{rest}s" if minutes else f"{rest}s").encode()
