"""The in-process state backend: the default when one gateway process serves a key space.

Every operation runs to completion without an `await` inside it, so on one event loop no
two operations interleave and no lock is needed. It is not thread-safe: use it from the
event loop that serves the gateway. Expired keys are dropped when next touched, and records
(`set_json`) are also swept every `_SWEEP_EVERY` writes so a response cache cannot grow
without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from thanos_asgi.governance.state._base import (
    SpendLost,
    WindowResult,
    from_micro,
    nonnegative_micro,
    window_index,
)

_SWEEP_EVERY = 1024
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(slots=True)
class _Budget:
    spent: int  # micro-dollars
    reserved: int  # micro-dollars
    expires: float


class MemoryBackend:
    """State for one process; `clock` (seconds, monotonic) is injectable for tests."""

    __slots__ = ("_budgets", "_clock", "_markers", "_records", "_windows", "_writes")

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window index, units used)
        self._budgets: dict[str, _Budget] = {}
        self._records: dict[str, tuple[bytes, float | None]] = {}  # key -> (json, expires)
        self._markers: dict[str, float] = {}  # marker -> expires
        self._writes = 0

    async def window_take(self, key: str, amount: int, limit: int, window: float) -> WindowResult:
        index, reset_after = window_index(self._clock(), window)
        used = self._used(key, index)
        amount = max(0, amount)
        if used + amount > limit:
            return WindowResult(False, used, limit, reset_after)
        self._windows[key] = (index, used + amount)
        return WindowResult(True, used + amount, limit, reset_after)

    async def window_adjust(self, key: str, delta: int, window: float) -> None:
        index, _ = window_index(self._clock(), window)
        self._windows[key] = (index, max(0, self._used(key, index) + delta))

    shared = False  # one process: it loses nothing while that process runs

    async def reserve(
        self,
        key: str,
        amount: float,
        limit: float,
        ttl: float,
        *,
        marker: str | None = None,
        owner: str | None = None,
        landed: Callable[[bool], object] | None = None,  # (never: these calls do not wait)
    ) -> bool:
        now = self._clock()
        if marker is not None and self._markers.get(marker, now) <= now:
            raise SpendLost(marker)
        budget = self._budget(key, now)
        micro = nonnegative_micro(amount)
        if budget.spent + budget.reserved + micro > nonnegative_micro(limit):
            return False
        budget.reserved += micro
        budget.expires = now + ttl
        return True

    async def settle(
        self, key: str, reserved: float, actual: float, ttl: float, *, owner: str | None = None
    ) -> None:
        now = self._clock()
        budget = self._budget(key, now)
        budget.reserved = max(0, budget.reserved - nonnegative_micro(reserved))
        budget.spent += nonnegative_micro(actual)
        budget.expires = now + ttl

    async def settle_many(
        self,
        adjusts: Sequence[tuple[str, int]],
        window: float,
        settles: Sequence[tuple[str, float, float]],
        ttl: float,
        *,
        owner: str | None = None,
    ) -> None:
        for key, delta in adjusts:
            await self.window_adjust(key, delta, window)  # (none of these awaits suspends)
        for key, reserved, actual in settles:
            await self.settle(key, reserved, actual, ttl, owner=owner)

    async def take_and_reserve(
        self,
        window: tuple[str, int, int, float],
        budgets: Sequence[tuple[str, float]],
        amount: float,
        ttl: float,
        *,
        marker: str,
        owner: str,
        landed: Callable[[WindowResult, bool | None], object] | None = None,  # (as reserve's)
    ) -> tuple[WindowResult, bool | None]:
        taken = await self.window_take(*window)
        now = self._clock()
        if not taken.allowed or self._markers.get(marker, now) <= now:
            return taken, None
        micro = nonnegative_micro(amount)
        held = [(self._budget(key, now), nonnegative_micro(limit)) for key, limit in budgets]
        if any(budget.spent + budget.reserved + micro > limit for budget, limit in held):
            return taken, False
        for budget, _ in held:
            budget.reserved += micro
            budget.expires = now + ttl
        return taken, True

    async def restore(self, marker: str, spent: Mapping[str, float], ttl: float) -> bool:
        now = self._clock()
        if self._markers.get(marker, now) > now:
            return False
        for key, amount in spent.items():
            budget = self._budget(key, now)
            budget.spent = max(budget.spent, nonnegative_micro(amount))
            budget.expires = now + ttl
        self._markers[marker] = now + ttl
        return True

    async def hold(self, key: str, owner: str, amount: float, ttl: float) -> None:
        return None  # nothing is ever lost from under a running process

    async def generation(self, marker: str) -> str | None:
        now = self._clock()
        return "memory" if self._markers.get(marker, now) > now else None

    async def spent(self, key: str) -> tuple[float, float]:
        budget = self._budgets.get(key)
        if budget is None or budget.expires <= self._clock():
            return 0.0, 0.0
        return from_micro(budget.spent), from_micro(budget.reserved)

    async def get_json(self, key: str) -> Any | None:
        record = self._records.get(key)
        if record is None:
            return None
        data, expires = record
        if expires is not None and expires <= self._clock():
            del self._records[key]
            return None
        return _decode(data)

    async def set_json(self, key: str, value: Any, ttl: float | None) -> None:
        now = self._clock()
        self._records[key] = (_encode(value), None if ttl is None else now + ttl)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep(now)

    async def aclose(self) -> None:
        return None

    def _used(self, key: str, index: int) -> int:
        current = self._windows.get(key)
        return current[1] if current is not None and current[0] == index else 0

    def _budget(self, key: str, now: float) -> _Budget:
        budget = self._budgets.get(key)
        if budget is None or budget.expires <= now:
            budget = self._budgets[key] = _Budget(0, 0, now)
        return budget

    def _sweep(self, now: float) -> None:
        expired = [k for k, (_, exp) in self._records.items() if exp is not None and exp <= now]
        for key in expired:
            del self._records[key]
