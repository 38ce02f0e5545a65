"""AccessLogMiddleware: one structured line per HTTP request, once its response has ended.

The line goes to the `thanos_asgi.access` logger at INFO as a dict message (its `str()` is
one JSON object; `configure_logging(fmt="json")` puts its fields at the top level):

    {"ts": 1717171717.123, "request_id": "…", "key_id": "team-a", "method": "POST",
     "path": "/v1/chat/completions", "status": 200, "outcome": "ok", "provider": "openai",
     "model": "gpt-4o-mini", "attempts": ["openai:ok"], "prompt_tokens": 12,
     "completion_tokens": 30, "cost_usd": 0.0000201, "latency_ms": 412.7,
     "overhead_ms": 0.4, "ttft_ms": 180.2}

What was answered comes from `scope["thanos.reply"]` (set by ThanosApp) and the key from
`scope["thanos.auth"]`. Never logged: headers (so no `Authorization` or `x-api-key`), the
query string (it may carry a key) and bodies. Place it inside RequestIdMiddleware and
outside AuthMiddleware, so refused requests are logged too. Costs one `send` wrapper per
request; nothing when the logger is not enabled for INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.frontends.asgi import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from thanos_asgi.core.dispatch import Reply

__all__ = ["AccessLogMiddleware", "AccessRecord"]

_encode = msgspec.json.Encoder().encode


class AccessRecord(dict[str, Any]):
    """The fields of one access log line; `str()` is their JSON."""

    def __str__(self) -> str:
        return _encode(self).decode()


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, *, logger: str = "thanos_asgi.access") -> None:
        self.app = app
        self.log = logging.getLogger(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        response = _Response(time.time(), time.perf_counter())

        def watching(message: Message) -> Awaitable[None]:  # see ErrorMiddleware
            if message["type"] == "http.response.start":
                response.started(message)
            elif not message.get("more_body", False):
                response.complete = True
            return send(message)

        try:
            await self.app(scope, receive, watching)
        finally:  # makeRecord + handle: `log.info` would also walk the stack to find its caller
            log = self.log
            log.handle(
                log.makeRecord(log.name, logging.INFO, "", 0, response.record(scope), (), None)
            )


class _Response:
    """What one response did, seen through `send`."""

    __slots__ = ("at", "begun", "complete", "overhead_ms", "status")

    def __init__(self, at: float, begun: float) -> None:
        self.at = at
        self.begun = begun
        self.status = 0
        self.complete = False
        self.overhead_ms: float | None = None

    def started(self, message: Message) -> None:
        self.status = message["status"]
        for name, value in message.get("headers", ()):
            if name == b"x-thanos-overhead-ms":
                self.overhead_ms = float(value)

    def record(self, scope: Scope) -> AccessRecord:
        auth = scope.get("thanos.auth") or {}
        entry = AccessRecord(
            ts=round(self.at, 3),
            request_id=scope.get("thanos.request_id", ""),
            key_id=auth.get("key_id"),
            method=scope.get("method", ""),
            path=scope.get("path", ""),
            status=self.status or 500,  # no response at all: the server answers 500
            outcome=self._outcome(scope.get("thanos.reply")),
            latency_ms=round((time.perf_counter() - self.begun) * 1000, 3),
        )
        reply: Reply | None = scope.get("thanos.reply")
        if reply is not None:
            _add_reply(entry, reply)
        if self.overhead_ms is not None:
            entry["overhead_ms"] = self.overhead_ms
        return entry

    def _outcome(self, reply: Reply | None) -> str:
        if reply is not None and reply.outcome:
            return reply.outcome
        if not self.complete:
            return "disconnected" if self.status else "error"
        return "ok" if self.status < 400 else "error"


def _add_reply(entry: AccessRecord, reply: Reply) -> None:
    usage = reply.usage
    entry.update(
        provider=reply.provider,
        model=reply.model,
        attempts=reply.attempts,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.output_tokens if usage else 0,
        cost_usd=reply.cost_usd,
    )
    if reply.first_byte_at and reply.started:
        entry["ttft_ms"] = round((reply.first_byte_at - reply.started) * 1000, 3)
