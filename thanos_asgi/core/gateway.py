"""The one core: config, providers, routing and accounting behind every front-end.

    async with Gateway(config) as gw:
        response = await gw.chat(ChatRequest(model="auto", messages=[...]))
        async for chunk in gw.stream(request): ...

Front-ends use `async with gw.dispatch(request, ctx) as reply:`, which releases everything
the request holds when the block ends, however it ends. Those that can take a provider's
bytes as they are (the OpenAI HTTP API in front of an OpenAI-compatible provider) pass
`raw=body, wire="openai"` and get a relay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.context import Context as Context
from thanos_asgi.context import current_context
from thanos_asgi.core.adapters import Adapters
from thanos_asgi.core.cache import Lookup, ResponseCache
from thanos_asgi.core.credentials import Pool
from thanos_asgi.core.dispatch import Dispatcher
from thanos_asgi.core.embeddings import Embedder
from thanos_asgi.core.events import EventBus
from thanos_asgi.core.metrics import Metrics
from thanos_asgi.core.monitor import HealthMonitor
from thanos_asgi.core.payload import PayloadRules
from thanos_asgi.core.reply import Dispatch, Reply, close
from thanos_asgi.core.routing import Router, Target
from thanos_asgi.core.strategy import Planner, permitted
from thanos_asgi.core.validation import Validator, check_embedding, check_ranges
from thanos_asgi.exceptions import ProviderUnavailable, ThanosError, UpstreamError
from thanos_asgi.governance.accounting import Accounting
from thanos_asgi.governance.cache import open_store
from thanos_asgi.governance.credentials import CredentialBook
from thanos_asgi.governance.estimates import estimate_embedding_tokens
from thanos_asgi.governance.ledgers import UsageLedger, open_ledger
from thanos_asgi.governance.models_dev import PriceRefresher
from thanos_asgi.governance.pricing import PriceBook, Pricing
from thanos_asgi.governance.state import StateBackend, open_backend
from thanos_asgi.providers.base import Provider
from thanos_asgi.sanitize import check_model_name
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
)
from thanos_asgi.upstream import Transport

__all__ = ["Context", "Dispatch", "Gateway", "Reply", "close"]

if TYPE_CHECKING:
    from thanos_asgi.config import Config

LIVE_MODELS_TIMEOUT = 3.0  # seconds a provider's own model list may take for GET /v1/models


@dataclass(slots=True)
class ProviderStats:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        transport: Transport | None = None,
        transports: Mapping[str, Transport] | None = None,
        state: StateBackend | None = None,
        ledger: UsageLedger | None = None,
    ) -> None:
        """`state` defaults to the `[state]` backend, `ledger` to `[ledger] url` or
        `[cost] ledger_path`.

        `owns_state`: `aclose` closes the state backend. A gateway replaced on reload hands
        its state to its successor (`Reloadable`), which then owns it: rate windows and
        month-to-date spend carry over."""
        self.config = config
        self.router = Router(config)
        self.stats: dict[str, ProviderStats] = {}
        self.adapters = Adapters(config, transport, transports)
        self.providers, self.health = self.adapters.providers, self.adapters.health
        self.state = state or open_backend(config.state)
        self.credentials = CredentialBook(self.state)
        self.pools = {
            name: Pool(name, config.providers[name].credential_strategy, group, self.credentials)
            for name, group in self.adapters.slots.items()
        }
        self.payload = PayloadRules(config.payload, config.source)
        self.owns_state = True
        self.ledger = ledger or _ledger(config)
        self._tracking = self.ledger is not None and config.cost.track_usage
        prices = PriceBook.from_config(config.models_dev)  # `[models_dev]` keeps it fresh
        self.price_refresher = PriceRefresher(prices, config.models_dev)
        pricing = Pricing(config, prices)
        self.accounting = Accounting(config, pricing=pricing, state=self.state, ledger=self.ledger)
        self.planner = Planner(config, self.router, self.health)
        self.planner.spend_fraction = self.accounting.spend_fraction
        self.validator = Validator(config)
        self.metrics = Metrics(self.health, known=self.known_model)
        self.events = EventBus()  # finished requests, for the admin feed (`GET /admin/events`)
        self.dispatcher = Dispatcher(
            self.providers,
            self.health,
            config.routing,
            self.record,
            self.accounting,
            metrics=self.metrics,
            pools=self.pools,
            payload=self.payload,
        )
        self.monitor = HealthMonitor(config.health, self.providers, self.health)
        self.embedder = Embedder(self.providers, self.accounting, self.record)
        self.cache: ResponseCache | None = None  # `[cache]`: see core/cache.py
        if config.cache.enabled:
            self.cache = ResponseCache(config, open_store(config), self.planner, self.embed)
            self.metrics.sources.append(self.cache.collect)

    async def __aenter__(self) -> Gateway:
        self.monitor.start()
        self.price_refresher.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.monitor.stop()
        await self.price_refresher.stop()
        await self.accounting.drain()
        self.accounting.holds.close()
        if self.owns_state:
            await self.state.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        if self.ledger is not None:
            self.ledger.close()
        await self.adapters.aclose()

    # -- chat ----------------------------------------------------------------------------------

    def dispatch(
        self,
        request: ChatRequest,
        ctx: Context | None = None,
        *,
        raw: dict[str, Any] | None = None,
        wire: str = "",
    ) -> Dispatch:
        """Route, then try candidates until one accepts the request (see `dispatch.py`):

            async with gateway.dispatch(request, ctx) as reply:
                ...  # deliver reply.response, reply.batches or reply.relayed

        Entering returns once the provider has accepted it (for streams: status and headers
        arrived), so nothing has reached the client yet while fallbacks happen. Leaving
        closes the upstream and releases the concurrency slot, circuit probe and budget and
        token holds, on every path, cancellation included.
        """
        return Dispatch(self._dispatch, request, ctx, raw, wire)

    async def _dispatch(
        self, request: ChatRequest, ctx: Context | None, raw: dict[str, Any] | None, wire: str
    ) -> Reply:
        started = time.perf_counter()
        self.monitor.start()
        check_ranges(request, wire)  # before anything is routed, reserved or recorded
        self.price_refresher.start()
        ctx = _with_metadata(ctx or Context(), request)
        token = current_context.set(ctx)
        tokens = lookup = None
        try:
            targets = permitted(self.planner.plan(request.model, ctx), request.model, ctx)
            targets = self.validator.fit(request, targets, wire)
            if self.cache is not None:
                lookup = await self.cache.lookup(request, targets, ctx)
                if lookup.entry is not None:  # rpm counts a hit; tpm and budgets do not
                    await self.accounting.count_request(ctx)
                    return self._cached(lookup, request, ctx, started)
                if lookup.key:  # canonical answers only: they are what is stored
                    raw = None
            first = targets[0] if targets else None
            tokens, prepared = await self.accounting.admit_chat(request, ctx, first)
            reply = await self.dispatcher.run(targets, request, ctx, raw, wire, prepared)
        except ThanosError as exc:
            if tokens is not None:
                self.accounting.refund(tokens)
            self._record_failure(request.model, ctx, exc)
            if self.cache is not None:
                self.cache.abandon(lookup)
            raise
        except BaseException:  # cancelled: recorded by the dispatcher; the TPM hold goes back
            if tokens is not None:
                self.accounting.refund(tokens)
            if self.cache is not None:
                self.cache.abandon(lookup)
            raise
        finally:
            current_context.reset(token)
        if self.cache is not None and lookup is not None:
            try:
                await self.cache.attach(lookup, reply)
            except BaseException:  # (cancelled while storing: the reply was never handed out)
                if tokens is not None:
                    self.accounting.refund(tokens)
                await reply.aclose("disconnected")
                raise
        reply.on_finish.append(lambda _: self.accounting.settle_tokens(tokens, reply.usage))
        reply.request_id, reply.key_id = ctx.request_id, ctx.key_id
        reply.started = started
        self.metrics.dispatched(reply)
        return reply

    def _cached(self, lookup: Lookup, request: ChatRequest, ctx: Context, started: float) -> Reply:
        """A cache hit as the request's reply: $0, no tokens, a ledger row marked cached."""
        assert self.cache is not None
        reply = self.cache.reply_for(lookup, request)
        reply.request_id, reply.key_id, reply.started = ctx.request_id, ctx.key_id, started

        def finished(outcome: str) -> None:
            reply.usage, reply.cost_usd = None, 0.0  # what the client saw cost nothing now
            self._final_row(reply, outcome)
            self.metrics.finished(reply, outcome)

        reply.on_finish.append(finished)
        self.metrics.dispatched(reply)
        return reply

    async def chat(self, request: ChatRequest, ctx: Context | None = None) -> ChatResponse:
        if request.stream:
            request = _with_stream(request, False)
        async with self.dispatch(request, ctx) as reply:
            assert reply.response is not None
            return reply.response

    async def stream(
        self, request: ChatRequest, ctx: Context | None = None
    ) -> AsyncIterator[ChatChunk]:
        if not request.stream:
            request = _with_stream(request, True)
        async with self.dispatch(request, ctx) as reply:  # a consumer that stops early: closed
            assert reply.batches is not None
            async for batch in reply.batches:
                for chunk in batch:
                    if chunk.usage is not None:
                        reply.usage = chunk.usage
                    yield chunk

    # -- the rest --------------------------------------------------------------------------

    async def embed(
        self, request: EmbeddingRequest, ctx: Context | None = None
    ) -> EmbeddingResponse:
        """Embeddings, through the same admission as chat: the key's allow-list, rpm and
        tpm, then each candidate's budgets; one ledger row with the key and the cost."""
        ctx = ctx or Context()
        try:
            check_embedding(request)
            targets = permitted(self.router.resolve(request.model), request.model, ctx)
            prompt = estimate_embedding_tokens(request)
            tokens = await self.accounting.admit_tokens(prompt, 0, ctx)
        except ThanosError as exc:
            self._record_failure(request.model, ctx, exc)
            raise
        try:
            response, usage = await self.embedder.run(targets, request, prompt, ctx)
        except ThanosError as exc:
            self.accounting.refund(tokens)
            self._record_failure(request.model, ctx, exc)
            raise
        self.accounting.settle_tokens(tokens, usage)
        return response

    async def check_access(self, model: str, ctx: Context) -> None:
        """The admission steps that apply to a route that names a model but spends nothing
        (count_tokens): the key's allow-list (PermissionDenied) and requests per minute."""
        if ctx.policy is not None:
            permitted(self.planner.plan(model, ctx), model, ctx)
            await self.accounting.count_request(ctx)

    async def models(self, *, live: bool = True) -> list[ModelInfo]:
        """Configured models and aliases, plus what each reachable provider lists itself."""
        seen: dict[str, ModelInfo] = {}
        for model_id, owner in self.router.configured_models():
            seen.setdefault(model_id, ModelInfo(id=model_id, owned_by=owner))
        if live:
            names = list(self.providers)
            listed = await asyncio.gather(*(self._live_models(self.providers[n]) for n in names))
            for name, models in zip(names, listed, strict=True):
                for model in models:
                    model_id = f"{name}/{model}"
                    seen.setdefault(model_id, ModelInfo(id=model_id, owned_by=name))
        return list(seen.values())

    async def _live_models(self, provider: Provider) -> list[str]:
        try:
            async with asyncio.timeout(LIVE_MODELS_TIMEOUT):
                return await provider.list_models()
        except (UpstreamError, ProviderUnavailable, TimeoutError):
            return []  # an unreachable provider still has its configured models listed

    def model_info(self, model_id: str) -> ModelInfo:
        check_model_name(model_id)
        target = self.router.resolve(model_id)[0]
        return ModelInfo(id=model_id, owned_by=target.instance)

    def record(self, reply: Reply, outcome: str, final: bool = True) -> None:
        """Account for one attempt; when `final`, the request's ledger row too."""
        stats = self.stats.get(reply.provider)
        if stats is None:
            stats = self.stats[reply.provider] = ProviderStats()
        stats.requests += 1
        if outcome == "error":
            stats.errors += 1
        usage = reply.usage
        if usage is not None:
            stats.prompt_tokens += usage.prompt_tokens
            stats.completion_tokens += usage.output_tokens
        if not final:
            self.metrics.attempt_failed(reply)
            return
        self._final_row(reply, outcome)
        self.metrics.finished(reply, outcome)

    def _record_failure(self, model: str, ctx: Context, exc: ThanosError) -> None:
        provider = getattr(exc, "provider", "") or ""
        self.metrics.refused(provider, exc.status)
        if self.events.subscribers or self._tracking:
            reply = Reply(Target(provider, model), [])
            reply.request_id, reply.key_id = ctx.request_id, ctx.key_id
            self._final_row(reply, f"error:{exc.status}")

    def _final_row(self, reply: Reply, status: str) -> None:
        """The request's ledger row, written and shown on the admin feed; built only when one
        of them wants it. Durable before this returns: in an event loop through the ledger's
        journal (one write(2), imported in batches), elsewhere committed at once."""
        watched = self.events.subscribers
        if not (watched or self._tracking):
            return
        row = reply.ledger_row(status)
        if watched:
            self.events.publish({"type": "request", **msgspec.structs.asdict(row)})
        if self.ledger is not None and self._tracking:
            self.ledger.queue(row)

    def known_model(self, instance: str, model: str) -> bool:
        """True for a model the config names for `instance` (its `model`, `models`, default
        or an alias target) or an exact models.dev id of its kind: a metrics label of its own."""
        if model in self.router.models_of(instance):
            return True
        return self.validator.catalogue.known(self.validator.kinds.get(instance, ""), model)

    def status(self) -> dict[str, Any]:
        providers: dict[str, Any] = {}
        for name, provider in self.providers.items():
            state = provider.status()
            state.update(self.health[name].report())
            stats = self.stats.get(name)
            if stats is not None:
                state.update(requests=stats.requests, errors=stats.errors)
            if name in self.pools:
                state["credentials"] = self.pools[name].states()
            providers[name] = state
        return providers


def _ledger(config: Config) -> UsageLedger | None:
    return open_ledger(config) if config.cost.track_usage else None


def _with_metadata(ctx: Context, request: ChatRequest) -> Context:
    """Task and complexity from request `metadata` when no header named them."""
    metadata = request.metadata
    if not metadata or (ctx.task and ctx.complexity):
        return ctx
    return dataclasses.replace(
        ctx,
        task=ctx.task or metadata.get("task"),
        complexity=ctx.complexity or metadata.get("complexity"),
    )


def _with_stream(request: ChatRequest, stream: bool) -> ChatRequest:
    return msgspec.structs.replace(request, stream=stream)
