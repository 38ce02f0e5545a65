"""One request against its ordered candidates: retries, fallbacks, circuits, limits, deadline.

Each round tries every remaining candidate once, in order; a transient failure (connect
error, timeout, 408, 429, 5xx, 529) moves on to the next candidate at once, and when a whole
round has failed the survivors are tried again after an exponential backoff with jitter
(at least the provider's Retry-After, capped). A client error (400-class) is never retried.
All of this happens before the first byte reaches the client; `Reply` is handed out as soon
as a provider has accepted the request.

Holds are released on every way out, cancellation included: an attempt that fails or is
cancelled gives back its concurrency slot, its half-open probes and its budget reservations
at once; an accepted request keeps them until its `Dispatch` context ends (`Reply.aclose`),
which also closes the upstream stream and every upstream response the attempt opened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thanos_asgi.context import Closable, Context, opened_responses
from thanos_asgi.core.credentials import credential_fault
from thanos_asgi.core.reply import Reply as Reply  # (re-exported: its old home)
from thanos_asgi.core.resilience import Health, blame
from thanos_asgi.core.routing import Target
from thanos_asgi.exceptions import (
    ProviderUnavailable,
    ThanosError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from thanos_asgi.governance.accounting import Accounting, Admission
from thanos_asgi.providers.base import Provider
from thanos_asgi.providers.batches import batched
from thanos_asgi.types import ChatRequest

if TYPE_CHECKING:
    from thanos_asgi.config import RoutingConfig
    from thanos_asgi.core.credentials import Pool, Slot
    from thanos_asgi.core.metrics import Metrics
    from thanos_asgi.core.payload import PayloadRules

Recorder = Callable[["Reply", str, bool], None]  # (reply, outcome, whole request done)


@dataclass(slots=True)
class _Holds:
    """What one attempt holds until it fails or its reply is finished."""

    target: Target
    health: Health
    probes: int  # the half-open probes taken (resilience.PROBE_*)
    started: float
    label: str  # how attempts name it: "openai", or "openai#team-a" for a pooled key
    credential: Slot | None = None
    slot: bool = False
    admission: Admission | None = None
    opened: list[Closable] = field(default_factory=list)  # upstream responses


@dataclass(slots=True)
class _Call:
    """One request's fixed inputs while its attempts run."""

    request: ChatRequest
    ctx: Context
    raw: dict[str, Any] | None
    wire: str
    attempts: list[str]
    failed_ms: float = 0.0  # time the failed attempts spent with providers
    prepared: Admission | None = None  # made with the tokens, for the first attempt


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: Mapping[str, Health],
        routing: RoutingConfig,
        record: Recorder,
        accounting: Accounting,
        metrics: Metrics | None = None,
        pools: Mapping[str, Pool] | None = None,
        payload: PayloadRules | None = None,
    ) -> None:
        self.providers = providers
        self.pools = pools or {}
        self.payload = payload or None
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
        prepared: Admission | None = None,
    ) -> Reply:
        """`prepared`: the first attempt's admission, made already (`Accounting.admit_chat`);
        given back as soon as the first attempt is over without having used it."""
        attempts: list[str] = []
        call = _Call(request, ctx, raw, wire, attempts, prepared=prepared)
        # (no get_running_loop() unless needed: on 3.11 it costs a getpid() syscall)
        deadline = asyncio.get_running_loop().time() + self.deadline if self.deadline else None
        pending, last = targets, None
        down: set[str] = set()  # instances found unreachable or refusing our credentials
        try:
            for round_ in range(self.max_rounds):
                failed: list[Target] = []
                for target in pending:
                    if down and target.instance in down:
                        continue  # its other models would fail the same way: next instance
                    try:
                        return await self._pooled(target, call, deadline)
                    except ThanosError as exc:
                        if not exc.retryable:
                            raise
                        last = exc
                        if blame(exc) == "instance":
                            down.add(target.instance)
                        if _worth_retrying(exc) and _again(exc):
                            failed.append(target)
                    finally:
                        if call.prepared is not None:  # (the circuit was open, a key cooling)
                            self.accounting.settle(call.prepared, None, target.model, 0.0)
                            call.prepared = None
                down.clear()
                delay = self._delay(round_, last)
                if not failed or round_ + 1 == self.max_rounds or _past(deadline, delay):
                    break
                await asyncio.sleep(delay)
                pending = failed
            raise last or _nothing_to_try(targets)
        except Exception:
            raise
        except BaseException:  # cancelled (the client left, a deadline): ended, not failed
            self._cancelled(targets, call)
            raise
        finally:  # a kept exception's traceback holds this frame: no cycle through `last`
            last = None

    async def _pooled(self, target: Target, call: _Call, deadline: float | None) -> Reply:
        """`_try` with each usable credential of a pooled instance in turn, while the
        failures are the keys' own (cooled or disabled); a plain `_try` otherwise."""
        pool = self.pools.get(target.instance)
        if pool is None:
            return await self._try(target, call, deadline)
        tried: set[str] = set()
        while True:
            try:
                credential = await pool.pick(target.model, tried)
            except ThanosError as exc:
                if not tried:  # skipped without a try: say why ("openai:credentials_cooling")
                    call.attempts.append(f"{target.instance}:{exc.code}")
                raise _tried(exc, call, target, 0.0) from None
            tried.add(credential.id)
            try:
                return await self._try(target, call, deadline, credential)
            except ThanosError as exc:
                if not await pool.failed(credential, exc):
                    raise

    async def _try(
        self, target: Target, call: _Call, deadline: float | None, credential: Slot | None = None
    ) -> Reply:
        health = self.health[target.instance]
        if call.attempts and self.metrics is not None:
            self.metrics.next_attempt(target.instance, call.attempts)
        probes = health.admit(target.model)
        if probes is None:
            breaker = health.refusing(target.model)
            call.attempts.append(f"{target.instance}:circuit_{breaker.state}")
            message = (
                f"provider '{target.instance}' is unavailable for '{target.model}' (circuit "
                f"{breaker.state}; last error: {breaker.last_error})"
            )  # (raised unnamed: a local naming it would tie it to this frame in a cycle)
            raise _tried(ProviderUnavailable(message, code="circuit_open"), call, target, 0.0)
        label = f"{target.instance}#{credential.id}" if credential else target.instance
        holds = _Holds(target, health, probes, time.perf_counter(), label, credential)
        token = opened_responses.set(holds.opened)
        try:
            if health.limiter is not None:
                await health.limiter.acquire(target.instance)
                holds.slot = True
            prepared = call.prepared
            if prepared is not None and (prepared.instance, prepared.model) == target:
                holds.admission, call.prepared = prepared, None
            else:
                holds.admission = await self.accounting.admit(target, call.request, call.ctx)
            provider = credential.provider if credential else self.providers[target.instance]
            request, raw = call.request, call.raw
            if self.payload is not None:
                request, raw = self.payload.apply(request, raw, target, call.ctx.key_id)
            attempt = _attempt(provider, target, request, raw, call.wire)
            reply = await (attempt if deadline is None else _within(attempt, deadline, target))
        except ThanosError as exc:
            if holds.admission is not None:
                await self.accounting.release(holds.admission)
            self._failed(holds, exc, call.attempts)
            _tried(exc, call, target, (time.perf_counter() - holds.started) * 1000)
            await _close_all(holds.opened)
            raise
        except BaseException:  # cancelled: give everything back without waiting on anything
            self._given_up(holds, call.attempts)
            await _close_all(holds.opened)
            raise
        finally:
            opened_responses.reset(token)
        reply.upstream = holds.opened
        self._accepted(reply, holds, call.attempts)
        return reply

    def _accepted(self, reply: Reply, holds: _Holds, attempts: list[str]) -> None:
        admission = holds.admission
        assert admission is not None
        attempts.append(f"{holds.label}:ok")
        reply.attempts = attempts
        if holds.credential is not None:
            reply.credential = holds.credential.id
            self._credential_metric(holds, "ok")
        reply.upstream_ms = (time.perf_counter() - holds.started) * 1000
        reply.budget_warning = admission.warning
        holds.health.latency.observe(reply.upstream_ms, ok=True)
        whole = reply.response.usage if reply.response is not None else None
        if reply.relayed is not None and reply.relayed.events is None:
            whole = reply.relayed.usage
        reply.cost_usd = self.accounting.cost(reply.provider, reply.model, whole)

        def finished(outcome: str) -> None:
            known = reply.cost_usd if whole is not None and reply.usage is whole else None
            reply.cost_usd = self.accounting.settle(admission, reply.usage, reply.model, known)
            self._finished(reply, holds, outcome)

        reply.on_finish.append(finished)

    def _failed(self, holds: _Holds, exc: ThanosError, attempts: list[str]) -> None:
        target, health = holds.target, holds.health
        if holds.slot:
            health.limiter.release()  # type: ignore[union-attr]
        attempts.append(f"{holds.label}:{attempt_code(exc)}")
        elapsed = (time.perf_counter() - holds.started) * 1000
        kind = blame(exc)
        if holds.credential is not None:
            self._credential_metric(holds, attempt_code(exc))
            if credential_fault(exc):
                kind = None  # the key's fault: it cools or is disabled, the instance is fine
        health.failed(target.model, holds.probes, kind, exc.message)
        if kind is not None:
            health.latency.observe(elapsed, ok=False)
        failed = Reply(target, list(attempts), elapsed)
        failed.credential = holds.credential.id if holds.credential else None
        self.record(failed, "error", False)

    def _given_up(self, holds: _Holds, attempts: list[str]) -> None:
        """The attempt was cancelled: slot and probes back, reservations refunded (in the
        background: nothing here may wait), recorded by `run` as the request's end."""
        target, health = holds.target, holds.health
        if holds.slot:
            health.limiter.release()  # type: ignore[union-attr]
        health.failed(target.model, holds.probes, None, "")
        if holds.admission is not None:
            self.accounting.settle(holds.admission, None, target.model, 0.0)
        attempts.append(f"{holds.label}:cancelled")

    def _cancelled(self, targets: list[Target], call: _Call) -> None:
        """The request was cancelled before any provider accepted it."""
        last = call.attempts[-1].partition(":")[0].partition("#")[0] if call.attempts else ""
        target = next((t for t in targets if t.instance == last), None)
        reply = Reply(target or Target(last, call.request.model), list(call.attempts))
        reply.request_id, reply.key_id = call.ctx.request_id, call.ctx.key_id
        self.record(reply, "disconnected", True)

    def _finished(self, reply: Reply, holds: _Holds, outcome: str) -> None:
        health = holds.health
        if holds.slot:
            health.limiter.release()  # type: ignore[union-attr]
        if outcome == "error":
            message = "the stream failed before it was complete"
            health.failed(holds.target.model, holds.probes, "model", message)
        else:
            health.succeeded(holds.target.model)
        self.record(reply, outcome, True)

    def _credential_metric(self, holds: _Holds, outcome: str) -> None:
        if self.metrics is not None and holds.credential is not None:
            self.metrics.credential_attempt(holds.target.instance, holds.credential.id, outcome)

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
        opener = getattr(provider, "open_batches", None)  # HTTPProvider's: a list per read
        if opener is not None:
            reply.batches = await opener(request, target.model)
        else:
            reply.batches = batched(await provider.open_stream(request, target.model))
    else:
        reply.response = await provider.chat(request, target.model)
    return reply


async def _close_all(responses: list[Closable]) -> None:
    for response in responses:
        await response.aclose()


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


def _worth_retrying(exc: ThanosError) -> bool:
    """Try this target again in the next round? Not after a refusal of our own (circuit
    open, budget spent) or of our credentials (a wrong key stays wrong)."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status not in (401, 403)
    return not isinstance(exc, ProviderUnavailable) or exc.code == "provider_busy"


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
