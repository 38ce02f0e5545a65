"""`GET /admin/providers`: every instance with its circuit state, latency percentiles, error
rate and last error over the last `RECENT` seconds of the ledger, its models, and its
credentials (`credentials`: one state per pooled credential, empty for a single key)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from thanos_asgi.frontends.admin._common import Caller, answer
from thanos_asgi.frontends.admin.stats import percentile

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

RECENT = 900  # seconds of ledger rows the percentiles and error rate are taken from
MAX_ROWS = 100_000


async def _recent(admin: AdminApi) -> dict[str, dict[str, Any]]:
    ledger = admin.gateway.ledger
    if ledger is None:
        return {}
    rows = await asyncio.to_thread(
        ledger.query,
        "SELECT provider, latency_ms, status FROM requests WHERE ts >= ? ORDER BY id DESC LIMIT ?",
        [time.time() - RECENT, MAX_ROWS],
    )
    seen: dict[str, tuple[list[float], list[int]]] = {}
    for provider, latency, status in rows:
        latencies, counts = seen.setdefault(provider, ([], [0, 0]))
        counts[0] += 1
        if str(status).startswith("error"):
            counts[1] += 1
        else:
            latencies.append(latency)
    found = {}
    for provider, (latencies, (total, errors)) in seen.items():
        latencies.sort()
        found[provider] = {
            "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95),
            "error_rate": round(errors / total, 4),
            "recent_requests": total,
        }
    return found


def credentials(admin: AdminApi, name: str) -> list[dict[str, Any]]:
    """The credential pool's states for instance `name`: id, state, cooling_until, last_error
    (never a key); empty for an instance with a single key."""
    pool = admin.gateway.pools.get(name)
    return [] if pool is None else pool.states()


async def listing(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    gateway = admin.gateway
    recent = await _recent(admin)
    found = []
    for name, state in gateway.status().items():
        empty = {"p50_ms": None, "p95_ms": None, "error_rate": None, "recent_requests": 0}
        found.append(
            {
                "name": name,
                **state,
                **recent.get(name, empty),
                "models": sorted(m for m in gateway.router.models_of(name) if m),
                "credentials": credentials(admin, name),
            }
        )
    await answer(ex, {"data": found, "window_seconds": RECENT})
