"""Which usage ledger a config asks for: the SQLite file (the default) or PostgreSQL.

`UsageLedger` is what the rest of the gateway uses of either (`Ledger`, `PgLedger`): the request
path `queue`s rows; reports, `/v1/usage`, `thanos usage` and the admin API read them; budgets are
rebuilt from `spend`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from thanos_asgi.config.schema import Config
from thanos_asgi.governance.ledger import GroupBy, Ledger, LedgerRow, Spend

__all__ = ["LedgerUnavailable", "UsageLedger", "open_ledger"]


class LedgerUnavailable(RuntimeError):
    """The configured ledger cannot be opened (its URL, password masked, is in the message)."""


class UsageLedger(Protocol):
    # every replica writes to it: a rebuild of budgets reads the rows the others imported
    shared: bool

    def record(self, row: LedgerRow) -> None: ...
    def queue(self, row: LedgerRow) -> None: ...
    def flush(self) -> bool: ...
    def report(
        self, *, group_by: GroupBy, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]: ...
    def total_cost(self, since: float, until: float | None = None) -> float: ...
    def spend(self, since: float) -> Spend: ...
    def rows(self, since: float | None = None) -> Iterator[LedgerRow]: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def to_csv(self, fileobj: IO[str], since: float | None = None) -> int: ...
    def purge(self, before: float) -> int: ...
    def close(self) -> None: ...


def open_ledger(config: Config, *, writer: bool = True) -> UsageLedger | None:
    """The ledger `config` names, or None when usage tracking is off.

    `[ledger] url`: PostgreSQL, with this process's journal beside `[cost] ledger_path`
    (`<ledger_path>.pg-journals`) when `writer`; else the SQLite file `[cost] ledger_path`."""
    cost, settings = config.cost, config.ledger
    if settings.url:
        from thanos_asgi.governance.ledger_pg import PgLedger

        journals = None
        if writer and cost.ledger_path:
            journals = Path(f"{cost.ledger_path}.pg-journals").expanduser()
        return PgLedger(settings.url, journals=journals, retention_days=settings.retention_days)
    if not cost.ledger_path:
        return None
    return Ledger(cost.ledger_path, retention_days=settings.retention_days)
