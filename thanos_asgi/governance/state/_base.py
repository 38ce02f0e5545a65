"""What every state backend promises, and the small helpers they share."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from thanos_asgi.exceptions import ThanosError

MICRO = 1_000_000  # money is kept as integer micro-dollars so sums never drift
MIN_WINDOW = 0.001


class StateUnavailable(ThanosError):
    """503: the shared state store cannot be used; the message never holds a password."""

    status = 503
    type = "state_unavailable"
    code = "state_unavailable"
    retryable = True


class SpendLost(Exception):
    """`reserve(..., marker=...)` found no marker: the store has lost its data (a Redis
    restarted without persistence, or flushed) or was never filled (a new process). The
    caller rebuilds month-to-date spend from the ledger with `restore`, then reserves again."""


class SpendSettling(Exception):
    """`reserve(..., marker=...)` came within the grace after a month was rebuilt: every
    process is re-adding its reservations in flight (`hold`); try again in `wait` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


GRACE = 1.0  # seconds after a rebuild in which reservations wait for the others' `hold`s


@dataclass(frozen=True, slots=True)
class WindowResult:
    allowed: bool
    used: int  # units in the window after this call (unchanged if refused)
    limit: int
    reset_after: float  # seconds until the window frees capacity


class StateBackend(Protocol):
    """Counters and small records shared by every gateway process that uses the same store.

    Windows are FIXED windows aligned to multiples of `window` seconds (on the store's clock:
    the event loop's monotonic clock in memory, Redis `TIME` for Redis). Within one window at
    most `limit` units are ever granted, exactly; across a window boundary a burst of up to
    2 x `limit` in `window` seconds is possible, the usual price of fixed windows.
    """

    async def window_take(self, key: str, amount: int, limit: int, window: float) -> WindowResult:
        """Add `amount` (a negative one counts as 0) to the current window of `key` if the
        total stays <= `limit`."""
        ...

    async def window_adjust(self, key: str, delta: int, window: float) -> None:
        """Add `delta` (may be negative) to the current window; never below 0."""
        ...

    shared: bool  # several processes use it, and it can lose its data while they run

    async def reserve(
        self,
        key: str,
        amount: float,
        limit: float,
        ttl: float,
        *,
        marker: str | None = None,
        owner: str | None = None,
        landed: Callable[[bool], object] | None = None,
    ) -> bool:
        """If spent + reserved + amount <= limit: reserved += amount, True; else False.

        Every write sets the whole key to expire `ttl` seconds later (e.g. the budget month's end).
        A negative `amount` counts as 0. With `marker`, SpendLost if that marker is not set,
        SpendSettling within `GRACE` of its rebuild. `owner` (a process) counts its share.
        `landed`: called with the outcome when the caller was cancelled after the store got
        the request and before its answer (a shared store's reservation lands anyway).
        """
        ...

    async def take_and_reserve(
        self,
        window: tuple[str, int, int, float],
        budgets: Sequence[tuple[str, float]],
        amount: float,
        ttl: float,
        *,
        marker: str,
        owner: str,
        landed: Callable[[WindowResult, bool | None], object] | None = None,
    ) -> tuple[WindowResult, bool | None]:
        """`window_take(*window)`, then, if it allowed, `reserve(key, amount, limit, ttl,
        marker=marker, owner=owner)` for every (key, limit) of `budgets`, all or none, as one
        step. The window's result, and True (all reserved), False (one refused; none held)
        or None (the window refused, or the marker is missing or in its grace: nothing
        reserved, and `reserve` tells which). `landed` as for `reserve`."""
        ...

    async def restore(self, marker: str, spent: Mapping[str, float], ttl: float) -> bool:
        """Unless `marker` is set: raise each key's spent to at least `spent[key]`, set
        `marker` to a new generation, all expiring after `ttl`, and start its grace, in one
        step; True if it did, False if it was set."""
        ...

    async def generation(self, marker: str) -> str | None:
        """The generation `marker` holds (new at each `restore`), None if it is not set."""
        ...

    async def settle(
        self, key: str, reserved: float, actual: float, ttl: float, *, owner: str | None = None
    ) -> None:
        """reserved -= `reserved` (not below 0; with `owner`, not beyond what it holds in the
        store); spent += `actual` (a negative one counts as 0); expiry as for `reserve`."""
        ...

    async def settle_many(
        self,
        adjusts: Sequence[tuple[str, int]],
        window: float,
        settles: Sequence[tuple[str, float, float]],
        ttl: float,
        *,
        owner: str | None = None,
    ) -> None:
        """`window_adjust(key, delta, window)` for each of `adjusts`, then `settle(key,
        reserved, actual, ttl, owner=owner)` for each of `settles`, in order and as one atomic
        step: what finished requests leave behind, in one round trip to a shared store."""
        ...

    async def hold(self, key: str, owner: str, amount: float, ttl: float) -> None:
        """Make `owner`'s share of `key`'s reserved exactly `amount` (idempotent): how a
        process puts back its reservations in flight after the store lost them."""
        ...

    async def spent(self, key: str) -> tuple[float, float]:
        """(spent, reserved) in USD for `key`; (0.0, 0.0) if unknown."""
        ...

    async def get_json(self, key: str) -> Any | None:
        """A small shared record (e.g. circuit-breaker state), or None."""
        ...

    async def set_json(self, key: str, value: Any, ttl: float | None) -> None:
        """Store a small JSON-encodable record, expiring after `ttl` seconds (None: never)."""
        ...

    async def aclose(self) -> None: ...


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


def nonnegative_micro(usd: float) -> int:
    """`usd` in micro-dollars, never below 0 (a negative or NaN amount is 0): nothing a
    request brings can lower what others see as spent or reserved."""
    return to_micro(usd) if usd > 0 else 0


def from_micro(micro: int) -> float:
    return micro / MICRO


def window_index(now: float, window: float) -> tuple[int, float]:
    """(index of the fixed window holding `now`, seconds until it ends)."""
    check_window(window)
    index = math.floor(now / window)
    return index, (index + 1) * window - now


def check_window(window: float) -> None:
    if not window >= MIN_WINDOW:
        raise ValueError(f"window must be at least {MIN_WINDOW} seconds, got {window!r}")
