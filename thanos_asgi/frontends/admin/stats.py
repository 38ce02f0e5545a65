"""`/admin/stats?window=…&step=…&by=…`: time series from the ledger.

`window` and `step` are seconds or `30m`, `24h`, `7d` (window at most 31 days, at most 1,000
steps). Each bucket has requests, errors, p50/p95 latency, tokens and cost; `groups` has the
window's totals by provider, model or key (`by`, default provider); `spend` has today's and
this month's cost (UTC) and the monthly budget."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.frontends.admin._common import Caller, answer, query
from thanos_asgi.frontends.admin.requests import ledger_of

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

MAX_WINDOW = 31 * 86400
MAX_BUCKETS = 1000
MAX_LATENCIES = 200_000  # latencies read for the percentiles of one window
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d{1,7})([smhd]?)$")
_GROUPS = {"provider": "provider", "model": "model", "key": "key_id"}
_SUMS = (
    "COUNT(*), SUM(CASE WHEN status LIKE 'error%' THEN 1 ELSE 0 END),"
    " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
    " COALESCE(SUM(cost_usd), 0.0)"
)
_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd")


def duration(value: str | None, name: str, default: int) -> int:
    if not value:
        return default
    found = _DURATION.match(value)
    if found is None:
        raise InvalidRequest(f"{name} must be seconds or like 30m, 24h, 7d", param=name)
    seconds = int(found[1]) * _UNITS[found[2] or "s"]
    if not 1 <= seconds <= MAX_WINDOW:
        raise InvalidRequest(f"{name} must be from 1 second to 31 days", param=name)
    return seconds


def percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


async def series(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    params = query(ex.scope)
    window = duration(params.get("window"), "window", 3600)
    step = duration(params.get("step"), "step", max(60, window // 60))
    if window // step > MAX_BUCKETS:
        raise InvalidRequest(f"window / step must be at most {MAX_BUCKETS}", param="step")
    by = params.get("by") or "provider"
    if by not in _GROUPS:
        raise InvalidRequest("by must be provider, model or key", param="by")
    ledger = ledger_of(admin)
    now = time.time()
    since = (now - window) // step * step
    # integer milliseconds divided by integers: the same buckets on SQLite and PostgreSQL
    # (whose casts truncate and round respectively: at most 1 ms apart)
    bucket = f"(CAST(ts * 1000 AS BIGINT) - {int(since * 1000)}) / {step * 1000}"
    sums = await asyncio.to_thread(
        ledger.query,
        f"SELECT {bucket} AS b, {_SUMS} FROM requests WHERE ts >= ? GROUP BY b",
        [since],
    )
    latencies = await asyncio.to_thread(
        ledger.query,
        f"SELECT {bucket} AS b, latency_ms FROM requests WHERE ts >= ? AND status = 'ok'"
        " ORDER BY b, latency_ms LIMIT ?",
        [since, MAX_LATENCIES],
    )
    groups = await asyncio.to_thread(
        ledger.query,
        f"SELECT {_GROUPS[by]} AS g, {_SUMS} FROM requests WHERE ts >= ? GROUP BY g ORDER BY g",
        [since],
    )
    body = {
        "window": window,
        "step": step,
        "since": since,
        "buckets": _buckets(since, step, int((now - since) // step) + 1, sums, latencies),
        "by": by,
        "groups": [{"name": g, **dict(zip(_FIELDS, rest, strict=True))} for g, *rest in groups],
        "spend": _spend(admin, now),
    }
    await answer(ex, body)


def _buckets(
    since: float,
    step: int,
    count: int,
    sums: list[tuple[Any, ...]],
    latencies: list[tuple[Any, ...]],
) -> list[dict[str, Any]]:
    by_bucket: dict[int, list[float]] = {}
    for index, latency in latencies:
        by_bucket.setdefault(index, []).append(latency)
    totals = {index: rest for index, *rest in sums}
    found = []
    for index in range(min(count, MAX_BUCKETS + 1)):
        ordered = by_bucket.get(index, [])
        values = totals.get(index, [0, 0, 0, 0, 0.0])
        found.append(
            {
                "ts": since + index * step,
                **dict(zip(_FIELDS, values, strict=True)),
                "p50_ms": percentile(ordered, 0.5),
                "p95_ms": percentile(ordered, 0.95),
            }
        )
    return found


def _spend(admin: AdminApi, now: float) -> dict[str, float | None]:
    ledger = ledger_of(admin)
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    return {
        "today_usd": ledger.total_cost(today.timestamp()),
        "month_usd": ledger.total_cost(month.timestamp()),
        "monthly_budget_usd": admin.config.cost.monthly_budget_usd,
    }
