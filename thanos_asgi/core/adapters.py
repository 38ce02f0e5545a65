"""The gateway's provider adapters, built once from the config: one per instance, one per
credential of a pooled instance, each with its health (breaker, concurrency limiter) and the
upstream transports they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.core.credentials import Slot
from thanos_asgi.core.resilience import Breaker, Health, Limiter
from thanos_asgi.providers import SPECS, effective_kind, load_adapter
from thanos_asgi.providers.base import Provider, Unavailable
from thanos_asgi.providers.openai_responses import responses_wire
from thanos_asgi.upstream import Transport

if TYPE_CHECKING:
    from thanos_asgi.config import Config, ProviderConfig


class Adapters:
    """`providers` and `health` per enabled instance; `slots` per pooled instance (its first
    slot's adapter is the instance's); `transports`: every transport the adapters use."""

    def __init__(
        self,
        config: Config,
        transport: Transport | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {}
        self.health: dict[str, Health] = {}
        self.slots: dict[str, list[Slot]] = {}
        self.transports: list[Transport] = []
        for provider_config in config.providers.values():
            if not provider_config.enabled:
                continue
            name = provider_config.name
            chosen = (transports or {}).get(name) or transport
            if provider_config.credentials:
                self.slots[name] = self._pool(provider_config, chosen)
                self.providers[name] = self.slots[name][0].provider
            else:
                self.providers[name] = self._build(provider_config, chosen)
            self.health[name] = _health(config, provider_config)

    def _build(self, config: ProviderConfig, transport: Transport | None) -> Provider:
        kind = effective_kind(config.name, config.kind)
        try:
            adapter = load_adapter(kind)
        except LookupError:
            reason = f"provider '{config.name}' (kind {kind}) is not available in this build"
            return Unavailable(config.name, kind, reason)
        if transport is None:  # the fast engine (benchmarks/README.md): a pool per provider
            from thanos_asgi.upstream.h1 import H1Transport

            transport = H1Transport(
                max_response_bytes=self.config.server.max_response_bytes,
                proxy=config.proxy,  # (from HTTPS_PROXY when [server] trust_env: the loader)
                ca_file=config.ca_file,
            )
        if transport not in self.transports:
            self.transports.append(transport)
        if config.wire_api == "responses":
            adapter = responses_wire(adapter)
        provider: Provider = adapter(config, spec=SPECS[kind], transport=transport)
        return provider

    def _pool(self, config: ProviderConfig, transport: Transport | None) -> list[Slot]:
        """One adapter per credential: its key, and its base URL and proxy if it has them."""
        slots = []
        for credential in config.credentials:
            own = msgspec.structs.replace(
                config,
                api_key=credential.api_key,
                base_url=credential.base_url or config.base_url,
                proxy=credential.proxy or config.proxy,
                credentials=[],
            )
            slots.append(Slot(credential, self._build(own, transport)))
        return slots

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        for slots in self.slots.values():
            for slot in slots[1:]:  # the first is `providers[name]`
                await slot.provider.aclose()
        for transport in self.transports:
            await transport.aclose()


def _health(config: Config, provider: ProviderConfig) -> Health:
    breaker = Breaker(config.health.failure_threshold, config.health.cooldown_seconds)
    limiter = None
    if provider.max_concurrent_requests:
        queue = provider.max_queue
        limit = provider.max_concurrent_requests
        limiter = Limiter(limit, 2 * limit if queue is None else queue)
    return Health(breaker, limiter=limiter)
