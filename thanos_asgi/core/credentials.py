"""Credential pools at run time: which key of an instance the next attempt uses.

An instance with `credentials` gets one adapter per credential (its own key, base URL and
proxy); `Pool.pick` chooses one for an attempt by the instance's strategy, skipping keys
already tried by this request, cooling, disabled or not serving the model. `Pool.failed`
says whether a failure was the key's (429 and quota answers cool it until the announced
reset, 401/403 disable it) so the dispatcher tries the next key before the next instance.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from thanos_asgi.config.credentials import Credential
from thanos_asgi.exceptions import (
    CredentialsCooling,
    ProviderUnavailable,
    ThanosError,
    UpstreamStatusError,
)
from thanos_asgi.governance.credentials import DEFAULT_COOLDOWN, CredentialBook
from thanos_asgi.providers.base import Provider

__all__ = ["Pool", "Slot", "credential_fault", "credential_states", "weighted_order"]

_QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"})


@dataclass(frozen=True, slots=True)
class Slot:
    credential: Credential
    provider: Provider

    @property
    def id(self) -> str:
        return self.credential.id

    def serves(self, model: str) -> bool:
        models = self.credential.models
        return models is None or any(fnmatchcase(model, glob) for glob in models)


def credential_fault(exc: ThanosError) -> str | None:
    """ "cool" (429, 402, a quota code), "disable" (401/403) or None: not the key's doing."""
    if not isinstance(exc, UpstreamStatusError):
        return None
    status = exc.upstream_status
    if status in (401, 403):
        return "disable"
    if status in (402, 429) or (exc.upstream_code or "") in _QUOTA_CODES:
        return "cool"
    return None


def weighted_order(weights: list[int]) -> list[int]:
    """Indexes in smooth weighted round-robin order: weights [1, 2] -> [1, 0, 1]."""
    current = [0] * len(weights)
    total, order = sum(weights), []
    for _ in range(total):
        for index, weight in enumerate(weights):
            current[index] += weight
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


class Pool:
    def __init__(
        self, instance: str, strategy: str, slots: list[Slot], book: CredentialBook
    ) -> None:
        self.instance = instance
        self.strategy = strategy
        self.slots = slots
        self.book = book
        self.order = weighted_order([slot.credential.weight for slot in slots])

    async def pick(self, model: str, tried: set[str]) -> Slot:
        """The credential for the next attempt; CredentialsCooling (429, Retry-After: the
        earliest reset) when the rest are cooling, ProviderUnavailable(no_credential) when
        none is usable."""
        serving = [slot for slot in self.slots if slot.serves(model)]
        enabled = [s for s in serving if not self.book.disabled(self.instance, s.id)]
        cooling = await self.book.cooling(self.instance, [s.id for s in enabled])
        ready = [s for s in enabled if s.id not in cooling and s.id not in tried]
        if ready:
            slot = await self._choose(ready)
            self.book.use(self.instance, slot.id)
            return slot
        if cooling:
            wait = max(min(cooling.values()) - time.time(), 0.0)
            raise CredentialsCooling(
                f"every credential of provider '{self.instance}' is cooling after rate "
                f"limits; the first is usable again in {wait:.0f} s"
            ).after(wait)
        if not serving:
            why = "serves this model"
        elif not enabled:
            why = "is usable: the provider refused every key (fix them, then reload)"
        else:
            why = "is left to try"
        raise ProviderUnavailable(
            f"no credential of provider '{self.instance}' {why}", code="no_credential"
        )

    async def _choose(self, ready: list[Slot]) -> Slot:
        if self.strategy == "fill-first" or len(ready) == 1:
            return ready[0]
        if self.strategy == "least-used":
            return min(ready, key=lambda slot: self.book.used(self.instance, slot.id))
        start = await self.book.position(self.instance)
        ids = {slot.id for slot in ready}
        for step in range(len(self.order)):
            slot = self.slots[self.order[(start + step) % len(self.order)]]
            if slot.id in ids:
                return slot
        return ready[0]

    async def failed(self, slot: Slot, exc: ThanosError) -> bool:
        """Note a failed attempt with `slot`; True when it was the key's fault."""
        fault = credential_fault(exc)
        if fault == "disable":
            self.book.disable(self.instance, slot.id, exc.message)
        elif fault == "cool":
            seconds = next(
                (s for s in (exc.reset_after, exc.retry_after) if s is not None), DEFAULT_COOLDOWN
            )
            await self.book.cool(self.instance, slot.id, seconds, exc.message)
        return fault is not None

    def states(self) -> list[dict[str, Any]]:
        """Each credential's id, state, cooling_until and last_error (never the key)."""
        result = []
        for slot in self.slots:
            status = self.book.status(self.instance, slot.id)
            result.append(
                {
                    "id": status.id,
                    "state": status.state,
                    "cooling_until": status.cooling_until,
                    "last_error": status.last_error,
                }
            )
        return result


def credential_states(pools: Mapping[str, Pool]) -> dict[str, list[dict[str, Any]]]:
    """Per pooled instance, per credential: id, state (ok|cooling|disabled), cooling_until
    (Unix time) and last_error; never a key."""
    return {name: pool.states() for name, pool in pools.items()}
