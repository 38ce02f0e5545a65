"""This process's budget reservations in flight, and putting them back when the shared state
lost them.

A reservation lives in the state backend's `reserved` until it settles. When a shared store
(Redis) loses its data while requests are in flight, the month's spend is rebuilt from the
ledger (`_spend.restore`), which knows only finished requests: without their reservations,
the next requests could be granted money the ones in flight are about to spend. So each
process counts what it holds per budget key, and while it holds anything a watcher looks at
the month's marker every `WATCH_EVERY` seconds; when the marker is gone it rebuilds the month
itself, and when it names a new generation it puts its holds back (`StateBackend.hold`,
idempotent, done twice to cover a settlement racing the first). Reservations wait out the
rebuild's grace (`GRACE`, several watch periods), so every live process has re-added its
holds before anything new is granted. Settlements release only what their process holds in
the store, so one made before the loss cannot release another process's reservation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from thanos_asgi.governance import _spend
from thanos_asgi.governance.state import StateBackend

log = logging.getLogger("thanos_asgi.governance.accounting")
WATCH_EVERY = 0.2  # seconds; well inside the state's GRACE (1 s)


class Holds:
    def __init__(self, state: StateBackend, restore: Callable[[str], Awaitable[None]]) -> None:
        self.state = state
        self.owner = secrets.token_hex(6)
        self.amounts: dict[str, float] = {}  # budget key -> USD reserved and not settled
        self._restore = restore
        self._watcher: asyncio.Task[None] | None = None

    def add(self, key: str, amount: float) -> None:
        self.amounts[key] = self.amounts.get(key, 0.0) + amount
        if self.state.shared and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def remove(self, key: str, amount: float) -> None:
        left = self.amounts.get(key, 0.0) - amount
        if left > 1e-9:
            self.amounts[key] = left
        else:
            self.amounts.pop(key, None)

    async def _watch(self) -> None:
        seen: dict[str, str | None] = {}
        again: set[str] = set()
        while self.amounts:
            for label in {key.split(":", 2)[1] for key in self.amounts}:
                try:
                    if await self._changed(label, seen):
                        again.add(label)
                        await self._put_back(label)
                    elif label in again:  # once more: a settlement may have raced the first
                        again.discard(label)
                        await self._put_back(label)
                except Exception as exc:  # the store is down: the next look tries again
                    log.debug("budget holds not checked: %s", exc)
            await asyncio.sleep(WATCH_EVERY)

    async def _changed(self, label: str, seen: dict[str, str | None]) -> bool:
        """Whether the month `label` was rebuilt since the last look (by us, if needed)."""
        marker = _spend.marker(label)
        found = await self.state.generation(marker)
        rebuilt = False
        if found is None:  # lost, and nobody has rebuilt it yet
            await self._restore(label)
            found = await self.state.generation(marker)
            rebuilt = True
        before = seen.get(label, found)  # the first look has nothing to compare with
        seen[label] = found
        return rebuilt or found != before

    async def _put_back(self, label: str) -> None:
        prefix = f"budget:{label}:"
        for key, amount in list(self.amounts.items()):
            if key.startswith(prefix):
                await self.state.hold(key, self.owner, amount, _spend.MONTH_TTL)
        log.info("budget reservations in flight put back after the month was rebuilt")

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
