"""What the front-end knows about the request being served, for the code that serves it.

`Gateway.dispatch` sets `current_context` for the duration of the provider call, so an
adapter that routes on task or complexity (Omen) can read it without every adapter's
signature carrying it. It is a ContextVar: each request's task sees only its own.

`opened_responses` is the list of upstream responses the current dispatch attempt opened:
`HTTPProvider.send` adds each, and the request's end closes them all, so a response is
returned to its pool even when the stream that was to read it never started.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What one client key may do (from `[[server.keys]]` or the key store)."""

    key_id: str
    models: tuple[str, ...] = ()  # allowed model names or `instance/*`; empty = any
    providers: tuple[str, ...] = ()  # allowed instances; empty = any
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None  # monthly
    admin: bool = False

    def allows(self, instance: str, requested: str, model: str) -> bool:
        if self.providers and instance not in self.providers:
            return False
        if not self.models:
            return True
        return any(
            pattern in (requested, model, f"{instance}/{model}", f"{instance}/*")
            for pattern in self.models
        )


@dataclass(slots=True)
class Quota:
    """The key's rate-limit windows one request was counted in, for OpenAI's `x-ratelimit-*`
    headers: (limit, remaining, seconds until the window resets); None while not counted.

    Whoever counts the key's request first fills `requests` (RateLimitMiddleware before the
    body is read, gRPC's access check, else the gateway's admission), so it is counted once."""

    requests: tuple[int, int, float] | None = None
    tokens: tuple[int, int, float] | None = None


@dataclass(slots=True)
class Context:
    """Per-request facts: who asks, and how they want it routed."""

    request_id: str = ""
    key_id: str | None = None
    policy: KeyPolicy | None = None
    task: str | None = None  # x-thanos-task: chat, completion, review, ...
    complexity: str | None = None  # x-thanos-complexity: quick, normal, deep
    fallback: bool = True  # x-thanos-fallback: off disables fallback for this request
    anthropic_beta: str | None = None  # a /v1/messages client's `anthropic-beta`, for Anthropic
    quota: Quota = field(default_factory=Quota)
    cache_control: str | None = None  # the request's Cache-Control (no-cache, no-store)


EMPTY = Context()
current_context: ContextVar[Context] = ContextVar("thanos_context", default=EMPTY)


class Closable(Protocol):
    async def aclose(self) -> None: ...


opened_responses: ContextVar[list[Closable] | None] = ContextVar(
    "thanos_opened_responses", default=None
)
