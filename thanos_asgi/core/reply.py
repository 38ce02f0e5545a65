"""What one dispatched request became (`Reply`), and the context that ends it (`Dispatch`).

`Dispatch` is the only way to get a `Reply` from the gateway: `async with
gateway.dispatch(...) as reply:`. Whatever ends the block, leaving it closes the upstream
(the stream and every response the accepted attempt opened) and finishes the reply, which
gives back the concurrency slot, the circuit probe and the budget and token holds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from thanos_asgi.context import Closable
from thanos_asgi.core.routing import Target
from thanos_asgi.governance.ledger_rows import LedgerRow
from thanos_asgi.providers.base import Relayed
from thanos_asgi.sanitize import MAX_MODEL_BYTES
from thanos_asgi.types import ChatChunk, ChatResponse, Usage

__all__ = ["Dispatch", "Reply", "close"]


@dataclass(eq=False)
class Reply:
    """What one dispatched request became; exactly one of the three payloads is set."""

    target: Target
    attempts: list[str]
    upstream_ms: float = 0.0
    response: ChatResponse | None = None
    batches: AsyncIterator[list[ChatChunk]] | None = None  # a stream: per upstream read
    relayed: Relayed | None = None
    usage: Usage | None = None
    cost_usd: float | None = None  # known at once for whole answers, at the end for streams
    budget_warning: str | None = None
    request_id: str = ""
    key_id: str | None = None
    credential: str | None = None  # the pooled credential's id (never its key)
    started: float = 0.0  # perf_counter() when dispatch began
    first_byte_at: float = 0.0  # perf_counter() when a stream's first event went out
    outcome: str = ""  # set by finish()
    cache: str = ""  # x-thanos-cache: hit, miss or bypass when the response cache is on
    on_finish: list[Callable[[str], None]] = field(default_factory=list, repr=False)
    finished: bool = field(default=False, repr=False)
    upstream: list[Closable] = field(default_factory=list, repr=False)  # responses opened
    provider: str = field(init=False, repr=False)  # `target.instance`, read often

    def __post_init__(self) -> None:
        self.provider = self.target.instance

    @property
    def model(self) -> str:
        """The model that answered, as the provider named it when it did (Omen's choice,
        a dated version), else the one the gateway asked for."""
        if self.relayed is not None and self.relayed.model:
            return self.relayed.model
        if self.response is not None and self.response.model:
            return self.response.model
        return self.target.model

    def ledger_row(self, status: str) -> LedgerRow:
        """What the usage ledger keeps of this request (never a prompt, an answer or a key)."""
        usage = self.usage
        return LedgerRow(
            ts=time.time(),
            request_id=self.request_id,
            key_id=self.key_id,
            provider=self.provider,
            model=self.model[:MAX_MODEL_BYTES],  # a provider's answer may name any model
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.output_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            cost_usd=self.cost_usd,
            status=status,
            latency_ms=self.upstream_ms,
            credential=self.credential,
            cached=self.cache == "hit",
        )

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
        callbacks, self.on_finish = self.on_finish, []  # they hold the reply: no cycle left
        failed: Exception | None = None
        for callback in callbacks:  # each releases its own holds: one failing skips no other
            try:
                callback(outcome)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            try:
                raise failed
            finally:  # (its traceback holds this frame: no cycle through the local)
                failed = None

    async def aclose(self, outcome: str = "ok") -> None:
        """Close the upstream (the stream, then every response the attempt opened, which
        also covers a stream nobody started reading) and `finish(outcome)`, even when
        closing is itself interrupted. Idempotent; `Dispatch` calls it on the way out."""
        try:
            if self.batches is not None:
                await close(self.batches)
            if self.relayed is not None and self.relayed.events is not None:
                await close(self.relayed.events)
            for response in self.upstream:
                await response.aclose()
        finally:
            if not self.finished:
                self.finish(outcome)


class Dispatch:
    """What `Gateway.dispatch` hands out: `async with gateway.dispatch(...) as reply:`.

    Entering runs the attempts and gives the accepted `Reply`; leaving, however it happens
    (an answer sent, an exception, a cancellation), closes the upstream and finishes the
    reply: "ok" after a normal exit unless the body finished it otherwise, "error" after an
    exception, "disconnected" after a cancellation. Until then the reply holds its slot,
    probes and reservations. Failures while entering release everything before raising.
    """

    __slots__ = ("_args", "_open", "reply")

    def __init__(self, open_: Callable[..., Awaitable[Reply]], *args: Any) -> None:
        """`open_(*args)` runs the attempts and returns the accepted reply."""
        self._open, self._args = open_, args
        self.reply: Reply | None = None

    async def __aenter__(self) -> Reply:
        self.reply = await self._open(*self._args)
        return self.reply

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reply = self.reply
        if reply is None:
            return
        if typ is None:
            if reply.batches is None and (reply.relayed is None or reply.relayed.events is None):
                if not reply.finished:  # a whole answer, read to its end: nothing is open
                    reply.finish()
                return
            outcome = "ok"
        else:
            outcome = "error" if issubclass(typ, Exception) else "disconnected"
        await reply.aclose(outcome)


async def close(iterator: object) -> None:
    """Close an async generator now (its upstream response with it), not when collected."""
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()
