"""Per-instance health: circuit breakers, latency EWMA, concurrency limits.

    closed --(failure_threshold consecutive failures)--> open
    open --(cooldown passed)--> half-open: one probe request goes through
    half-open --(probe succeeds)--> closed;  --(probe fails)--> open again

Only failures that say something about the provider's health count (connect errors, timeouts,
5xx, garbage); a client's bad request or a rate limit does not open a circuit. A background
health check can also force a circuit open ("auto_disable_on_failure") until it recovers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from thanos_asgi.exceptions import ProviderUnavailable, ThanosError, UpstreamStatusError

EWMA_WEIGHT = 0.2


def counts_against_health(exc: ThanosError) -> bool:
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500 or exc.upstream_status == 408
    return exc.retryable and not isinstance(exc, ProviderUnavailable)


@dataclass
class Breaker:
    threshold: int = 5
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    disabled: bool = False  # forced open by a failed health check
    last_error: str | None = None

    @property
    def state(self) -> str:
        if self.disabled:
            return "disabled"
        if self.opened_at is None:
            return "closed"
        if self.probing or time.monotonic() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a request go to this instance now? Takes the half-open probe slot if so."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        if self.probing or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
        self.probing = False

    def release_probe(self) -> None:
        """The probe ended without saying anything about health (e.g. a client error)."""
        self.probing = False


@dataclass
class Latency:
    """EWMA of observed latency in ms, with errors counted as slow."""

    ewma_ms: float | None = None
    error_penalty_ms: float = 5_000.0

    def observe(self, ms: float, ok: bool) -> None:
        sample = ms if ok else max(ms, self.error_penalty_ms)
        self.ewma_ms = (
            sample
            if self.ewma_ms is None
            else (EWMA_WEIGHT * sample + (1 - EWMA_WEIGHT) * self.ewma_ms)
        )

    def score(self) -> float:
        return 0.0 if self.ewma_ms is None else self.ewma_ms  # untried instances go first


class Limiter:
    """At most `limit` requests in flight; `queue` more may wait; beyond that, refuse."""

    def __init__(self, limit: int, queue: int) -> None:
        self.limit = limit
        self.queue = queue
        self.waiting = 0
        self.in_flight = 0
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self, name: str) -> None:
        if self._slots.locked() and self.waiting >= self.queue:
            raise ProviderUnavailable(
                f"provider '{name}' is at its limit of {self.limit} concurrent requests",
                code="provider_busy",
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()


@dataclass
class Health:
    """Everything the gateway tracks about one instance."""

    breaker: Breaker
    latency: Latency = field(default_factory=Latency)
    limiter: Limiter | None = None

    def report(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "state": self.breaker.state,
            "consecutive_failures": self.breaker.failures,
            "latency_ewma_ms": _rounded(self.latency.ewma_ms),
        }
        if self.limiter is not None:
            state["in_flight"] = self.limiter.in_flight
        return state


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
