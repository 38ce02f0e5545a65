"""One request against its ordered candidates: retries, fallbacks, circuits, limits, deadline.

Each round tries every remaining candidate once, in order; a transient failure (connect
error, timeout, 408, 429, 5xx, 529) moves on to the next candidate at once, and when a whole
round has failed the survivors are tried again after an exponential backoff with jitter
(at least the provider's Retry-After, capped). A client error (400-class) is never retried.
All of this happens before the first byte reaches the client; `Reply` is returned as soon
as a provider has accepted the request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thanos_asgi.context import Context
from thanos_asgi.core.resilience import Health, counts_against_health
from thanos_asgi.core.routing import Target
from thanos_asgi.exceptions import (
    ProviderUnavailable,
    ThanosError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from thanos_asgi.governance.accounting import Accounting, Admission
from thanos_asgi.providers.base import Provider, Relayed
from thanos_asgi.types import ChatChunk, ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from thanos_asgi.config import RoutingConfig
    from thanos_asgi.core.metrics import Metrics

Recorder = Callable[["Reply", str, bool], None]  # (reply, outcome, whole request done)


@dataclass(eq=False)
class Reply:
    """What one dispatched request became; exactly one of the three payloads is set."""

    target: Target
    attempts: list[str]
    upstream_ms: float = 0.0
    response: ChatResponse | None = None
    chunks: AsyncIterator[ChatChunk] | None = None
    relayed: Relayed | None = None
    usage: Usage | None = None
    cost_usd: float | None = None  # known at once for whole answers, at the end for streams
    budget_warning: str | None = None
    request_id: str = ""
    key_id: str | None = None
    started: float = 0.0  # perf_counter() when dispatch began
    first_byte_at: float = 0.0  # perf_counter() when a stream's first event went out
    outcome: str = ""  # set by finish()
    on_finish: list[Callable[[str], None]] = field(default_factory=list, repr=False)
    finished: bool = field(default=False, repr=False)

    @property
    def provider(self) -> str:
        return self.target.instance

    @property
    def model(self) -> str:
        """The model that answered, as the provider named it when it did (Omen's choice,
        a dated version), else the one the gateway asked for."""
        if self.relayed is not None and self.relayed.model:
            return self.relayed.model
        if self.response is not None and self.response.model:
            return self.response.model
        return self.target.model

    def first_event_sent(self) -> None:
        self.first_byte_at = time.perf_counter()

    def finish(self, outcome: str = "ok") -> None:
        """Call once the answer was delivered ("ok"), failed mid-stream ("error") or the
        client left ("disconnected"): releases the provider slot and records the request."""
        if self.finished:
            return
        self.finished, self.outcome = True, outcome
        if self.relayed is not None and self.relayed.usage is not None:
            self.usage = self.relayed.usage
        elif self.response is not None and self.response.usage is not None:
            self.usage = self.response.usage
        for callback in self.on_finish:
            callback(outcome)


@dataclass(slots=True)
class _Call:
    """One request's fixed inputs while its attempts run."""

    request: ChatRequest
    ctx: Context
    raw: dict[str, Any] | None
    wire: str
    attempts: list[str]
    failed_ms: float = 0.0  # time the failed attempts spent with providers


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: Mapping[str, Health],
        routing: RoutingConfig,
        record: Recorder,
        accounting: Accounting,
        metrics: Metrics | None = None,
    ) -> None:
        self.providers = providers
        self.metrics = metrics
        self.health = health
        self.record = record
        self.accounting = accounting
        self.max_rounds = routing.max_retries + 1
        self.backoff = routing.retry_backoff_ms / 1000
        self.max_delay = routing.max_retry_delay_ms / 1000
        self.deadline = routing.request_timeout_ms / 1000 if routing.request_timeout_ms else None

    async def run(
        self,
        targets: list[Target],
        request: ChatRequest,
        ctx: Context,
        raw: dict[str, Any] | None = None,
        wire: str = "",
    ) -> Reply:
        attempts: list[str] = []
        call = _Call(request, ctx, raw, wire, attempts)
        # (no get_running_loop() unless needed: on 3.11 it costs a getpid() syscall)
        deadline = asyncio.get_running_loop().time() + self.deadline if self.deadline else None
        pending, last = targets, None
        for round_ in range(self.max_rounds):
            failed: list[Target] = []
            for target in pending:
                try:
                    return await self._try(target, call, deadline)
                except ThanosError as exc:
                    if not exc.retryable:
                        raise
                    last = exc
                    if _again(exc):
                        failed.append(target)
            delay = self._delay(round_, last)
            if not failed or round_ + 1 == self.max_rounds or _past(deadline, delay):
                break
            await asyncio.sleep(delay)
            pending = failed
        raise last or _nothing_to_try(targets)

    async def _try(self, target: Target, call: _Call, deadline: float | None) -> Reply:
        health = self.health[target.instance]
        if call.attempts and self.metrics is not None:
            self.metrics.next_attempt(target.instance, call.attempts)
        if not health.breaker.allow():
            call.attempts.append(f"{target.instance}:circuit_{health.breaker.state}")
            unavailable = ProviderUnavailable(
                f"provider '{target.instance}' is unavailable (circuit {health.breaker.state}; "
                f"last error: {health.breaker.last_error})",
                code="circuit_open",
            )
            raise _tried(unavailable, call, target, 0.0)
        started = time.perf_counter()
        admission = None
        try:
            if health.limiter is not None:
                await health.limiter.acquire(target.instance)
            admission = await self.accounting.admit(target, call.request, call.ctx)
            provider = self.providers[target.instance]
            attempt = _attempt(provider, target, call.request, call.raw, call.wire)
            reply = await (attempt if deadline is None else _within(attempt, deadline, target))
        except ThanosError as exc:
            if admission is not None:
                await self.accounting.release(admission)
            self._failed(target, health, exc, call.attempts, started)
            _tried(exc, call, target, (time.perf_counter() - started) * 1000)
            raise
        self._accepted(reply, health, admission, call.attempts, started)
        return reply

    def _accepted(
        self,
        reply: Reply,
        health: Health,
        admission: Admission,
        attempts: list[str],
        started: float,
    ) -> None:
        attempts.append(f"{reply.provider}:ok")
        reply.attempts, reply.upstream_ms = attempts, (time.perf_counter() - started) * 1000
        reply.budget_warning = admission.warning
        health.latency.observe(reply.upstream_ms, ok=True)
        whole = reply.response.usage if reply.response is not None else None
        if reply.relayed is not None and reply.relayed.events is None:
            whole = reply.relayed.usage
        reply.cost_usd = self.accounting.cost(reply.provider, reply.model, whole)

        def finished(outcome: str) -> None:
            known = reply.cost_usd if whole is not None and reply.usage is whole else None
            reply.cost_usd = self.accounting.settle(admission, reply.usage, reply.model, known)
            self._finished(reply, health, outcome)

        reply.on_finish.append(finished)

    def _failed(
        self, target: Target, health: Health, exc: ThanosError, attempts: list[str], started: float
    ) -> None:
        if exc.code != "provider_busy" and health.limiter is not None:
            health.limiter.release()
        attempts.append(f"{target.instance}:{attempt_code(exc)}")
        elapsed = (time.perf_counter() - started) * 1000
        if counts_against_health(exc):
            health.breaker.failure(exc.message)
            health.latency.observe(elapsed, ok=False)
        else:
            health.breaker.release_probe()
        self.record(Reply(target, list(attempts), elapsed), "error", False)

    def _finished(self, reply: Reply, health: Health, outcome: str) -> None:
        if health.limiter is not None:
            health.limiter.release()
        if outcome == "error":
            health.breaker.failure("the stream failed before it was complete")
        else:
            health.breaker.success()
        self.record(reply, outcome, True)

    def _delay(self, round_: int, last: ThanosError | None) -> float:
        delay: float = min(self.backoff * 2**round_, self.max_delay) * random.uniform(0.8, 1.2)
        if last is not None and last.retry_after is not None:
            delay = max(delay, min(last.retry_after, self.max_delay))
        return delay


def _again(exc: ThanosError) -> bool:
    """Whether a later round may try the same target again after `exc`."""
    if isinstance(exc, UpstreamError):
        return not exc.maybe_delivered  # never resent where it may have been acted on
    return not isinstance(exc, ProviderUnavailable) or exc.code == "provider_busy"


async def _attempt(
    provider: Provider, target: Target, request: ChatRequest, raw: dict[str, Any] | None, wire: str
) -> Reply:
    reply = Reply(target, [])
    if raw is not None and wire and provider.wire == wire:
        reply.relayed = await provider.relay(dict(raw), target.model, stream=request.stream)
    elif request.stream:
        reply.chunks = await provider.open_stream(request, target.model)
    else:
        reply.response = await provider.chat(request, target.model)
    return reply


async def _within(attempt: Awaitable[Reply], deadline: float, target: Target) -> Reply:
    """`attempt`, cut off at `deadline` (no such wrapper, and no timer, without one)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await attempt
    except TimeoutError:
        raise UpstreamTimeout("the request deadline passed", provider=target.instance) from None


def _tried(exc: ThanosError, call: _Call, target: Target, spent_ms: float) -> ThanosError:
    """`exc`, noting what the request has tried so far (for the error answer's headers)."""
    call.failed_ms += spent_ms
    exc.attempts, exc.tried, exc.upstream_ms = call.attempts, target, call.failed_ms
    return exc


def attempt_code(exc: ThanosError) -> str:
    """How an attempt that failed with `exc` shows in `x-thanos-attempts`: `openai:503`."""
    if isinstance(exc, UpstreamStatusError):
        return str(exc.upstream_status)
    return exc.code or exc.type


def _past(deadline: float | None, delay: float) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() + delay >= deadline


def _nothing_to_try(targets: list[Target]) -> ThanosError:
    names = ", ".join(t.instance for t in targets) or "none"
    return ProviderUnavailable(f"no provider could take this request (candidates: {names})")
