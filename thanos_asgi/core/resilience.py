"""Per-instance health: circuit breakers, latency EWMA, concurrency limits.

    closed --(failure_threshold consecutive failures)--> open
    open --(cooldown passed)--> half-open: one probe request goes through
    half-open --(probe succeeds)--> closed;  --(probe fails)--> open again

Each instance has one breaker for itself and one per model that failed lately, and a failure
goes to the breaker it says something about (`blame`):

- the instance's: the provider cannot be reached or refuses the gateway's credentials
  (connect errors, resets before any answer, upstream 401 and 403);
- the (instance, model) pair's: the provider answered for this model but badly (5xx, 408,
  529, a timeout waiting for the answer, an unreadable answer, a stream cut short), so one
  failing model (`openai/fault-503`) does not shut out the instance's healthy models;
- neither: what says nothing about health (the client's bad request, 404, a rate limit, a
  refusal of our own such as a full queue, no free connection in our pool or a spent budget).

A request needs both its breakers to let it through. A background health check can also
force the instance's circuit open ("auto_disable_on_failure") until it recovers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from thanos_asgi.exceptions import (
    POOL_EXHAUSTED,
    ProviderUnavailable,
    ThanosError,
    UpstreamConnectError,
    UpstreamStatusError,
)

EWMA_WEIGHT = 0.2
MAX_MODEL_BREAKERS = 256  # per instance: models with recent failures, beyond which none is added
PROBE_INSTANCE, PROBE_MODEL = 1, 2  # the half-open probes one attempt holds

Blame = Literal["instance", "model"] | None


def blame(exc: ThanosError) -> Blame:
    """Which breaker `exc` counts against (see the module's docstring)."""
    if isinstance(exc, UpstreamStatusError):
        status = exc.upstream_status
        if status in (401, 403):
            return "instance"
        return "model" if status >= 500 or status == 408 else None
    if isinstance(exc, UpstreamConnectError):  # (unless our own pool had no connection free)
        return None if exc.code == POOL_EXHAUSTED else "instance"
    if exc.retryable and not isinstance(exc, ProviderUnavailable):
        return "model"  # timeouts, unreadable answers
    return None


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
    """Everything the gateway tracks about one instance; `models` holds a breaker for each
    model that failed lately (dropped again once it is closed and clean)."""

    breaker: Breaker
    latency: Latency = field(default_factory=Latency)
    limiter: Limiter | None = None
    models: dict[str, Breaker] = field(default_factory=dict)

    def admit(self, model: str) -> int | None:
        """May an attempt on `model` go now? None if not; else the half-open probes it took
        (`PROBE_INSTANCE`, `PROBE_MODEL` bits), to be given back by `failed` or `succeeded`."""
        breaker = self.breaker
        if breaker.opened_at is None and not breaker.disabled and not self.models:
            return 0  # all closed: the usual case, in as few steps as possible
        if not breaker.allow():
            return None
        probes = PROBE_INSTANCE if breaker.opened_at is not None else 0
        if self.models:
            own = self.models.get(model)
            if own is not None:
                if not own.allow():
                    if probes:
                        breaker.release_probe()
                    return None
                if own.opened_at is not None:
                    probes |= PROBE_MODEL
        return probes

    def refusing(self, model: str) -> Breaker:
        """The breaker that made `admit` refuse."""
        own = self.models.get(model)
        return own if self.breaker.state == "closed" and own is not None else self.breaker

    def failed(self, model: str, probes: int, kind: Blame, message: str) -> None:
        """An attempt on `model` ended without an answer: a failure of `kind`'s breaker (see
        `blame`), or of none (a client error, a cancellation: the probes taken go back)."""
        if kind == "instance":
            self.breaker.failure(message)
        elif probes & PROBE_INSTANCE:
            self.breaker.release_probe()
        if kind == "model":
            own = self.models.get(model)
            if own is None and len(self.models) < MAX_MODEL_BREAKERS:
                own = self.models[model] = Breaker(self.breaker.threshold, self.breaker.cooldown)
            if own is not None:
                own.failure(message)
        elif probes & PROBE_MODEL and (own := self.models.get(model)) is not None:
            own.release_probe()

    def succeeded(self, model: str) -> None:
        breaker = self.breaker
        if breaker.failures or breaker.opened_at is not None or breaker.probing:
            breaker.success()
        if self.models:  # a closed, clean breaker is not kept: made again on the next failure
            self.models.pop(model, None)

    def report(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "state": self.breaker.state,
            "consecutive_failures": self.breaker.failures,
            "latency_ewma_ms": _rounded(self.latency.ewma_ms),
        }
        if self.limiter is not None:
            state["in_flight"] = self.limiter.in_flight
        if self.models:
            state["models"] = {
                model: {"state": breaker.state, "consecutive_failures": breaker.failures}
                for model, breaker in self.models.items()
            }
        return state


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
