"""Background health checks (`[health]`, `[health.<instance>]`).

Every `check_interval_seconds`, each instance with a `[health.<name>]` table is checked:
`ping_endpoint` must answer below 400, `expected_models` must all be listed by the provider,
`test_prompt` must get an answer within `max_response_time_ms`, and with `check_auth` the
instance must hold usable credentials (an API key, or a login present and not expired: no
request is sent for this part). A failed check disables the
instance (its circuit is forced open) when `auto_disable_on_failure` is set; a passing check
enables it again when `auto_enable_on_recovery` is set. The task starts with the gateway
(`async with Gateway(...)`, or lazily on the first request) and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from thanos_asgi.core.resilience import Health
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.providers.base import HTTPProvider, Provider
from thanos_asgi.types import ChatRequest, Message

if TYPE_CHECKING:
    from thanos_asgi.config import HealthConfig, ProviderHealth

log = logging.getLogger("thanos_asgi.health")


class HealthMonitor:
    def __init__(
        self, config: HealthConfig, providers: Mapping[str, Provider], health: Mapping[str, Health]
    ) -> None:
        self.config = config
        self.checks = {n: c for n, c in config.providers.items() if n in providers}
        self.providers = providers
        self.health = health
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.checks:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.config.check_interval_seconds)

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(name) for name in self.checks))

    async def check(self, name: str) -> bool:
        """Run one instance's checks and update its circuit; True when they all passed."""
        try:
            await self._probe(self.providers[name], self.checks[name])
        except (ThanosError, TimeoutError) as exc:
            message = getattr(exc, "message", None) or "health check timed out"
            self._failed(name, message)
            return False
        breaker = self.health[name].breaker
        if breaker.disabled and self.config.auto_enable_on_recovery:
            log.info("provider %s passed its health check; enabled again", name)
            breaker.disabled = False
            breaker.success()
        return True

    def _failed(self, name: str, message: str) -> None:
        breaker = self.health[name].breaker
        breaker.last_error = f"health check: {message}"
        if self.config.auto_disable_on_failure and not breaker.disabled:
            log.warning("provider %s failed its health check (%s); disabled", name, message)
            breaker.disabled = True

    async def _probe(self, provider: Provider, check: ProviderHealth) -> None:
        limit = (check.max_response_time_ms or 10_000) / 1000
        if check.check_auth:
            _check_auth(provider)
        async with asyncio.timeout(limit):
            if check.ping_endpoint and isinstance(provider, HTTPProvider):
                response = await provider.send("GET", check.ping_endpoint)
                await provider.read(response)
            if check.expected_models:
                await _expect_models(provider, check.expected_models)
            if check.test_prompt:
                await _test_prompt(provider, check.test_prompt)


def _check_auth(provider: Provider) -> None:
    reason = provider.missing_key() if isinstance(provider, HTTPProvider) else None
    if reason is None and provider.status().get("configured") is False:
        reason = str(provider.status().get("last_error") or "not configured")
    if reason is not None:
        raise ThanosError(f"credentials: {reason}")


async def _expect_models(provider: Provider, expected: list[str]) -> None:
    listed = set(await provider.list_models())
    missing = [model for model in expected if model not in listed]
    if missing:
        raise ThanosError(f"expected models not listed: {', '.join(missing)}")


async def _test_prompt(provider: Provider, prompt: str) -> None:
    model = provider.default_model or next(iter(provider.models), None)
    if model is None:
        raise ThanosError("test_prompt needs a default model on the instance")
    started = time.perf_counter()
    request = ChatRequest(
        model=model, messages=[Message(role="user", content=prompt)], max_tokens=16
    )
    await provider.chat(request, model)
    log.debug("health prompt answered in %.0f ms", (time.perf_counter() - started) * 1000)
