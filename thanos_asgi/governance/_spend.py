"""Month-to-date spend: the budget month, money as people read it, and rebuilding spend from
the usage ledger when the shared state has lost it.

The ledger is the source of truth for spend. The state backend holds, per budget month, the
spent and reserved amounts of every budget plus a marker (`budget:<month>:restored`). Every
reservation asks for the marker in the same atomic step; when it is missing (a new process
with the memory backend, a Redis restarted without persistence or flushed, a new month) the
month's spend per key, per provider and in all is read from the ledger and written back
(each budget raised to at least that) together with the marker, once, before any reservation
of that month is granted.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thanos_asgi.governance.ledgers import UsageLedger
    from thanos_asgi.governance.state import StateBackend

log = logging.getLogger("thanos_asgi.governance.accounting")
MONTH_TTL = 40 * 24 * 3600.0  # budget keys outlive their month


def month_label(now: float | None = None) -> str:
    """The budget month holding `now` (UTC), as "YYYY-MM"."""
    return time.strftime("%Y-%m", time.gmtime(now))


def month_start(label: str) -> float:
    """Unix time at which the budget month `label` began (UTC)."""
    year, month = (int(part) for part in label.split("-"))
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def until_next_month(now: float | None = None) -> float:
    """Seconds until the next budget month begins (when monthly budgets reset)."""
    now = time.time() if now is None else now
    moment = time.gmtime(now)
    year, month = (
        (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    )
    return max(1.0, calendar.timegm((year, month, 1, 0, 0, 0)) - now)


def money(usd: float) -> str:
    """USD to the micro-dollar, trailing zeros dropped but cents kept: $0.001, $0.00, $12.50."""
    whole, _, fraction = f"{max(usd, 0.0):.6f}".rstrip("0").partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def marker(label: str) -> str:
    return f"budget:{label}:restored"


async def restore(state: StateBackend, ledger: UsageLedger | None, label: str) -> bool:
    """Write the month `label`'s spend from `ledger` into `state` unless its marker is set
    there already; True if this call did it."""
    prefix = f"budget:{label}:"
    spent: dict[str, float] = {f"{prefix}global": 0.0}
    if ledger is not None:
        found = await asyncio.to_thread(ledger.spend, month_start(label))
        spent[f"{prefix}global"] = found.total
        spent.update({f"{prefix}key:{key}": usd for key, usd in found.keys.items()})
        spent.update({f"{prefix}provider:{name}": usd for name, usd in found.providers.items()})
    restored = await state.restore(marker(label), spent, MONTH_TTL)
    if restored:
        log.info(
            "month-to-date spend for %s rebuilt from the usage ledger: %s in all, %d keys",
            label,
            money(spent[f"{prefix}global"]),
            sum(name.startswith(f"{prefix}key:") for name in spent),
        )
    return restored
