"""The one core: config, providers, routing and accounting behind every front-end.

    async with Gateway(config) as gw:
        response = await gw.chat(ChatRequest(model="auto", messages=[...]))
        async for chunk in gw.stream(request): ...

Front-ends that can take a provider's bytes as they are (the OpenAI HTTP API in front of an
OpenAI-compatible provider) call `dispatch(..., raw=body, wire="openai")` and get a relay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import Context as Context
from .exceptions import ProviderUnavailable, ThanosError, UpstreamError, UpstreamStatusError
from .providers import SPECS, effective_kind, load_adapter
from .providers._base import Provider, Relayed, Unavailable
from .routing import Router, Target
from .transport import AiohttpTransport, Transport
from .types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    Usage,
)

if TYPE_CHECKING:
    from .config import Config, ProviderConfig


@dataclass(slots=True)
class ProviderStats:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None


@dataclass(eq=False)
class Reply:
    """What one dispatched request became; exactly one of the four payloads is set."""

    gateway: Gateway
    target: Target
    attempts: list[str]
    upstream_ms: float
    response: ChatResponse | None = None
    chunks: AsyncIterator[ChatChunk] | None = None
    relayed: Relayed | None = None
    usage: Usage | None = None
    _finished: bool = field(default=False, repr=False)

    @property
    def provider(self) -> str:
        return self.target.instance

    @property
    def model(self) -> str:
        return self.target.model

    def finish(self, outcome: str = "ok") -> None:
        """Record the request once its answer has been delivered (or failed mid-stream)."""
        if self._finished:
            return
        self._finished = True
        if self.relayed is not None and self.relayed.usage is not None:
            self.usage = self.relayed.usage
        elif self.response is not None and self.response.usage is not None:
            self.usage = self.response.usage
        self.gateway.record(self.target.instance, self.usage, self.upstream_ms, outcome)


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        transport: Transport | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config)
        self.stats: dict[str, ProviderStats] = {}
        self.providers: dict[str, Provider] = {}
        self._transports: list[Transport] = []
        for provider_config in config.providers.values():
            if provider_config.enabled:
                chosen = (transports or {}).get(provider_config.name) or transport
                self.providers[provider_config.name] = self._build(provider_config, chosen)

    def _build(self, config: ProviderConfig, transport: Transport | None) -> Provider:
        kind = effective_kind(config.name, config.kind)
        try:
            adapter = load_adapter(kind)
        except LookupError:
            reason = f"provider '{config.name}' (kind {kind}) is not available in this build"
            return Unavailable(config.name, kind, reason)
        if transport is None:
            transport = AiohttpTransport()
        if transport not in self._transports:
            self._transports.append(transport)
        provider: Provider = adapter(config, spec=SPECS[kind], transport=transport)
        return provider

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        for transport in self._transports:
            await transport.aclose()

    # -- chat ----------------------------------------------------------------------------------

    async def dispatch(
        self,
        request: ChatRequest,
        ctx: Context | None = None,
        *,
        raw: dict[str, Any] | None = None,
        wire: str = "",
    ) -> Reply:
        """Try the candidates in order until one answers; fall back only on retryable errors.

        Returns once the provider has accepted the request (for streams: its status and
        headers arrived), so nothing has reached the client yet when a fallback happens.
        """
        attempts: list[str] = []
        last: ThanosError | None = None
        for target in self.router.resolve(request.model):
            provider = self.providers[target.instance]
            started = time.perf_counter()
            try:
                reply = await self._attempt(provider, target, request, raw, wire)
            except (UpstreamError, ProviderUnavailable) as exc:
                attempts.append(f"{target.instance}:{_attempt_code(exc)}")
                self.record(target.instance, None, _ms(started), "error")
                last = exc
                if not exc.retryable:
                    raise
                continue
            attempts.append(f"{target.instance}:ok")
            reply.attempts, reply.upstream_ms = attempts, _ms(started)
            return reply
        assert last is not None
        raise last

    async def _attempt(
        self,
        provider: Provider,
        target: Target,
        request: ChatRequest,
        raw: dict[str, Any] | None,
        wire: str,
    ) -> Reply:
        reply = Reply(self, target, [], 0.0)
        if raw is not None and wire and provider.wire == wire:
            reply.relayed = await provider.relay(raw, target.model, stream=request.stream)
        elif request.stream:
            reply.chunks = await provider.open_stream(request, target.model)
        else:
            reply.response = await provider.chat(request, target.model)
        return reply

    async def chat(self, request: ChatRequest, ctx: Context | None = None) -> ChatResponse:
        if request.stream:
            request = _with_stream(request, False)
        reply = await self.dispatch(request, ctx)
        assert reply.response is not None
        reply.finish()
        return reply.response

    async def stream(
        self, request: ChatRequest, ctx: Context | None = None
    ) -> AsyncIterator[ChatChunk]:
        if not request.stream:
            request = _with_stream(request, True)
        reply = await self.dispatch(request, ctx)
        assert reply.chunks is not None
        outcome = "error"
        try:
            async for chunk in reply.chunks:
                if chunk.usage is not None:
                    reply.usage = chunk.usage
                yield chunk
            outcome = "ok"
        finally:
            reply.finish(outcome)

    # -- the rest --------------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        last: ThanosError | None = None
        for target in self.router.resolve(request.model):
            provider = self.providers[target.instance]
            started = time.perf_counter()
            try:
                response = await provider.embed(request, target.model)
            except (UpstreamError, ProviderUnavailable) as exc:
                self.record(target.instance, None, _ms(started), "error")
                last = exc
                if not exc.retryable:
                    raise
                continue
            usage = Usage(prompt_tokens=response.usage.prompt_tokens)
            self.record(target.instance, usage, _ms(started), "ok")
            return response
        assert last is not None
        raise last

    async def models(self, *, live: bool = True) -> list[ModelInfo]:
        """Configured models and aliases, plus what each reachable provider lists itself."""
        seen: dict[str, ModelInfo] = {}
        for model_id, owner in self.router.configured_models():
            seen.setdefault(model_id, ModelInfo(id=model_id, owned_by=owner))
        if live:
            for name, provider in self.providers.items():
                for model in await self._live_models(provider):
                    model_id = f"{name}/{model}"
                    seen.setdefault(model_id, ModelInfo(id=model_id, owned_by=name))
        return list(seen.values())

    async def _live_models(self, provider: Provider) -> list[str]:
        try:
            return await provider.list_models()
        except (UpstreamError, ProviderUnavailable):
            return []  # an unreachable provider still has its configured models listed

    def model_info(self, model_id: str) -> ModelInfo:
        target = self.router.resolve(model_id)[0]
        return ModelInfo(id=model_id, owned_by=target.instance)

    def record(self, instance: str, usage: Usage | None, latency_ms: float, outcome: str) -> None:
        stats = self.stats.get(instance)
        if stats is None:
            stats = self.stats[instance] = ProviderStats()
        stats.requests += 1
        stats.latency_ms = latency_ms
        if outcome != "ok":
            stats.errors += 1
        if usage is not None:
            stats.prompt_tokens += usage.prompt_tokens
            stats.completion_tokens += max(
                usage.completion_tokens, usage.total_tokens - usage.prompt_tokens
            )

    def status(self) -> dict[str, Any]:
        providers: dict[str, Any] = {}
        for name, provider in self.providers.items():
            state = provider.status()
            stats = self.stats.get(name)
            if stats is not None:
                state.update(requests=stats.requests, errors=stats.errors)
            providers[name] = state
        return providers


def _attempt_code(exc: ThanosError) -> str:
    if isinstance(exc, UpstreamStatusError):
        return str(exc.upstream_status)
    return exc.code or exc.type


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _with_stream(request: ChatRequest, stream: bool) -> ChatRequest:
    import msgspec

    return msgspec.structs.replace(request, stream=stream)
