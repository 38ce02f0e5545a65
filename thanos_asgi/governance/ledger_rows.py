"""A usage ledger's rows, whichever ledger holds them (SQLite or PostgreSQL): the row, the
spend summary, report rows, time ranges and CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any, Literal

import msgspec

GroupBy = Literal["day", "provider", "model", "key"]


class LedgerRow(msgspec.Struct, frozen=True):
    """One request. `cost_usd` is None when the price was unknown (never guessed)."""

    ts: float
    request_id: str
    key_id: str | None
    provider: str
    model: str
    prompt_tokens: int = 0  # includes cached tokens
    completion_tokens: int = 0  # includes reasoning tokens
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    status: str = "ok"
    latency_ms: float = 0.0
    credential: str | None = None  # which credential of the provider's pool carried it
    cached: bool = False  # answered from the response cache (no provider was asked)


COLUMNS: tuple[str, ...] = LedgerRow.__struct_fields__
_TS, _COST = COLUMNS.index("ts"), COLUMNS.index("cost_usd")


class Spend(msgspec.Struct, frozen=True):
    """USD of the priced requests since some time: in all, per client key, per provider."""

    total: float = 0.0
    keys: dict[str, float] = msgspec.field(default_factory=dict)
    providers: dict[str, float] = msgspec.field(default_factory=dict)


_REPORT_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",  # the sum of the known costs
    "unpriced_requests",  # rows whose cost is unknown: `cost_usd` leaves them out
)


def window(since: float | None, until: float | None, mark: str = "?") -> tuple[str, list[float]]:
    """The WHERE clause (placeholders `mark`) and parameters of a time range."""
    clauses, params = [], []
    if since is not None:
        clauses.append(f"ts >= {mark}")
        params.append(since)
    if until is not None:
        clauses.append(f"ts < {mark}")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def write_csv(rows: Iterable[LedgerRow], fileobj: IO[str]) -> int:
    """`rows` as CSV with a header line (see `Ledger.to_csv`); return the count."""
    writer = csv.writer(fileobj, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        values: list[Any] = list(msgspec.structs.astuple(row))
        values[_TS] = datetime.fromtimestamp(row.ts, UTC).isoformat(timespec="milliseconds")
        values[_COST] = "" if row.cost_usd is None else _decimal(row.cost_usd)
        writer.writerow(values)
        count += 1
    return count


def _decimal(value: float) -> str:
    """`value` without an exponent (to a trillionth): 0.00000495, not 4.95e-06."""
    return f"{value:.12f}".rstrip("0").rstrip(".")


def report_row(name: str, row: tuple[Any, ...]) -> dict[str, Any]:
    group, requests, *sums, cost, unpriced = row
    tokens = [int(value) for value in sums]
    return {
        name: group,
        **dict(zip(_REPORT_FIELDS, [requests, *tokens, cost, unpriced], strict=True)),
    }
