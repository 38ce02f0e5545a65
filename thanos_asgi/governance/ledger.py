"""The usage ledger: one SQLite row per request (time, key id, provider, model, tokens, cost).

Durability: the database runs in WAL mode with `synchronous=NORMAL` and autocommit, so every
`record` is its own committed transaction, appended to the `-wal` file with write(2) before
`record` returns. A process crash (kill -9, OOM kill) right after the response loses nothing:
the bytes are in the OS page cache, and the next open replays the WAL. What NORMAL gives up is
an fsync per commit: an OS crash or power cut can lose the last commits (never corrupt the
file). That is the requirement, and it keeps a row at ~0.1 ms on a VM disk, where an fsync per
commit (`synchronous=FULL`) measured ~3 ms.

The gateway calls `queue` instead: the row is appended to this process's journal with one
write(2) (same guarantee, see `journal.py`) and imported into SQLite with the other rows of the
next `LATER` seconds in one transaction, by the ledger's own thread (`Aside`): the import's
SQLite work never stalls the event loop, which only builds the row and writes its line. The
database file therefore shows a row up to `LATER` seconds after its answer went out, and after a
crash once the ledger is next opened; `report`, `rows` and `total_cost` import what is queued
first.

Only the columns below are stored: never a secret (`key_id` is a client key's id, not the key),
a prompt or a completion. Times are unix seconds; `report(group_by="day")` buckets by UTC day.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any

import msgspec

from thanos_asgi.governance import journal as _journal
from thanos_asgi.governance._sqlite import Aside
from thanos_asgi.governance.ledger_rows import (
    COLUMNS,
    GroupBy,
    LedgerRow,
    Spend,
    report_row,
    window,
    write_csv,
)
from thanos_asgi.governance.retention import Retention

__all__ = ["COLUMNS", "GroupBy", "Ledger", "LedgerRow", "Spend", "write_csv"]

log = logging.getLogger("thanos_asgi")
LATER = 0.1  # seconds a queued row may wait for company before it is imported
MAX_PENDING = 100_000  # rows kept for a retry while SQLite refuses them

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT,
    key_id TEXT,
    provider TEXT,
    model TEXT,
    prompt_tokens INT,
    completion_tokens INT,
    cached_tokens INT,
    reasoning_tokens INT,
    cost_usd REAL NULL,
    status TEXT,
    latency_ms REAL,
    credential TEXT NULL,
    cached INT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE INDEX IF NOT EXISTS requests_key_id ON requests (key_id);
"""
_SCHEMA += _journal.TABLE + ";\n"
_ROW = f"({', '.join('?' * len(COLUMNS))})"
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES {_ROW}"
# An import inserts its rows in statements of these many rows each (a batch of 50: 32, 16
# and 2). `executemany` runs one statement per row, and the thread must take the GIL back
# after each: while the event loop is busy, that is a wait of up to 5 ms a row. At most 64
# rows (896 values) a statement: SQLite before 3.32 allows 999.
_SIZES = (64, 32, 16, 8, 4, 2, 1)
_INSERTS = {size: _INSERT + f", {_ROW}" * (size - 1) for size in _SIZES}
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM requests"

# group_by -> (the SQL expression, the name of its field in a report row)
_GROUPS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "day": ("date(ts, 'unixepoch')", "day"),
        "provider": ("provider", "provider"),
        "model": ("model", "model"),
        "key": ("key_id", "key_id"),
    }
)
_SUMS = """COUNT(*), TOTAL(prompt_tokens), TOTAL(completion_tokens), TOTAL(cached_tokens),
    TOTAL(reasoning_tokens), TOTAL(cost_usd), COUNT(*) - COUNT(cost_usd)"""


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents, each mode 0700."""
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def _connect(path: Path) -> sqlite3.Connection:
    if str(path) != ":memory:":
        _make_private_dirs(path.parent)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # 0600 if new; -wal/-shm follow
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    # A new file only: 1 KiB pages make each commit's WAL frames (a table and two index pages)
    # smaller: ~30-40% less time per row than 4 KiB pages, measured on a VM with a virtio disk
    db.execute("PRAGMA page_size=1024")
    for attempt in range(50):
        try:  # switching to WAL can be refused at once while another process opens the file
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))
    db.execute("PRAGMA synchronous=NORMAL")
    # No checkpoint inside a commit (SQLite's default, each 1,000 WAL pages: page writes and
    # an fsync, a stall of milliseconds on the event loop); `Checkpointer` does it aside.
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.executescript(_SCHEMA)
    _add_missing_columns(db)
    return db


# Columns added after the first release, with the SQL type they are added with; a ledger file
# written by an older version gains them on open (rows it already holds get the default).
_ADDED_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"credential": "TEXT NULL", "cached": "INT NOT NULL DEFAULT 0"}
)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _insert(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert `rows` (inside the caller's transaction) with a few multi-row statements."""
    done = 0
    for size in _SIZES:
        while len(rows) - done >= size:
            db.execute(_INSERTS[size], [value for row in rows[done : done + size] for value in row])
            done += size


class Ledger:
    """The usage ledger in one SQLite file; safe to share between threads and processes."""

    shared = False  # one machine's file (replicas elsewhere each keep their own)

    def __init__(
        self, path: str | os.PathLike[str], *, retention_days: float | None = None
    ) -> None:
        self.path = Path(path).expanduser()
        self.retention_days = retention_days
        self._retention = Retention(retention_days)
        self._db = _connect(self.path)
        self._db_lock = threading.Lock()  # the connection; taken before `_lock`, never after
        self._lock = threading.Lock()  # the journal and the queued rows: held for an append
        self._reader: sqlite3.Connection | None = None  # `query`'s own, opened by the first
        self._read_lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []  # appended to the journal, not yet imported
        self._journal: _journal.Journal | None = None  # opened by the first `queue`
        self._aside: Aside | None = None  # imports and checkpoints; started by the first write
        self._closed = False
        self._journals = Path(f"{self.path}.journals")
        if self._journals.is_dir():
            _journal.recover(self._db, self._journals, _INSERT, len(COLUMNS))
        self._retain()

    def _thread(self) -> Aside | None:
        if self._aside is None and not self._closed:  # (":memory:": its checkpoints do nothing)
            with self._lock:  # the first write may come from two threads at once
                if self._aside is None:
                    self._aside = Aside(self.path, "usage ledger", self._imported, LATER)
        return self._aside

    def _written(self) -> None:
        aside = self._aside or self._thread()
        if aside is not None:
            aside.dirty = True

    def record(self, row: LedgerRow) -> None:
        """Insert and commit `row` before returning (one cached prepared INSERT, autocommit)."""
        values = msgspec.structs.astuple(row)
        with self._db_lock:
            self._db.execute(_INSERT, values)
        self._written()

    def queue(self, row: LedgerRow) -> None:
        """Make `row` durable now (one append to the journal) and import it into SQLite, in
        the ledger's thread, with the others queued within `LATER` seconds."""
        values = msgspec.structs.astuple(row)
        with self._lock:
            try:
                journal = self._journal or self._open_journal()
                if journal is not None:
                    journal.append(_journal.encode_row(values) + b"\n")
            except OSError as exc:  # still imported with the others, unless we crash first
                log.error("usage ledger: journal write failed: %s", exc)
            self._pending.append(values)
        aside = self._aside or self._thread()
        if aside is not None:
            aside.poke()

    def _open_journal(self) -> _journal.Journal | None:
        if str(self.path) == ":memory:":
            return None
        _make_private_dirs(self._journals)
        self._journal = _journal.Journal(self._journals)
        return self._journal

    def _imported(self) -> None:  # the thread's work
        self.flush()

    def flush(self) -> bool:
        """Import the queued rows now, in one transaction; False if SQLite refused them
        (logged; they are kept for the next try, and are in the journal meanwhile)."""
        with self._db_lock:
            with self._lock:  # the rows and how far into the journal they reach
                rows, self._pending = self._pending, []
                journal = self._journal
                offset = journal.size if journal is not None else 0
            if not rows:
                return True
            try:
                self._db.execute("BEGIN")
                _insert(self._db, rows)
                if journal is not None:
                    journal.imported(self._db, offset)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                log.error("usage ledger: %d rows not recorded yet: %s", len(rows), exc)
                with self._lock:
                    self._pending[:0] = rows[-MAX_PENDING:]
                return False
            if journal is not None and offset >= _journal.ROTATE_AT:
                self._renew(journal, offset)
            self._written()
        self._retain()
        return True

    def _renew(self, journal: _journal.Journal, offset: int) -> None:
        """Go on in a new journal once every row of this one is imported (none came since)."""
        with self._lock:
            if journal.size != offset:
                return  # rows came meanwhile: the next import renews it
            try:
                journal.renew(self._db)
            except OSError as exc:  # it goes on in the old file, and tries again later
                log.warning("usage ledger: could not start a new journal: %s", exc)

    def report(
        self, *, group_by: GroupBy, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group in `[since, until)`, ordered by group."""
        expression, name = _GROUPS[group_by]
        where, params = window(since, until)
        self.flush()
        sql = f"SELECT {expression} AS grp, {_SUMS} FROM requests{where} GROUP BY grp ORDER BY grp"
        with self._db_lock:
            found = self._db.execute(sql, params).fetchall()
        return [report_row(name, row) for row in found]

    def total_cost(self, since: float, until: float | None = None) -> float:
        """USD of the priced requests in `[since, until)`."""
        where, params = window(since, until)
        self.flush()
        with self._db_lock:
            found = self._db.execute(f"SELECT TOTAL(cost_usd) FROM requests{where}", params)
            (total,) = found.fetchone()
        return float(total)

    def spend(self, since: float) -> Spend:
        """What the priced requests from `since` on cost, in all, per key and per provider:
        what budgets are rebuilt from when the shared state has lost them."""
        self.flush()
        sql = (
            "SELECT key_id, provider, TOTAL(cost_usd) FROM requests WHERE ts >= ? "
            "GROUP BY key_id, provider"
        )
        with self._db_lock:
            found = self._db.execute(sql, (since,)).fetchall()
        spend = Spend()
        total = 0.0
        for key_id, provider, cost in found:
            total += cost
            if key_id is not None:
                spend.keys[key_id] = spend.keys.get(key_id, 0.0) + cost
            if provider:
                spend.providers[provider] = spend.providers.get(provider, 0.0) + cost
        return msgspec.structs.replace(spend, total=total)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read-only `sql` on the `requests` table, queued rows imported
        first (the admin API's request log and time series). On a connection of its own (a
        WAL reader), so a long read never holds up the writers' lock; call it in a thread."""
        self.flush()
        if str(self.path) == ":memory:":
            with self._db_lock:
                return self._db.execute(sql, params).fetchall()
        with self._read_lock:
            if self._reader is None:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._reader = sqlite3.connect(uri, uri=True, check_same_thread=False)
            return self._reader.execute(sql, params).fetchall()

    def rows(self, since: float | None = None) -> Iterator[LedgerRow]:
        """Every row from `since` on, oldest first."""
        where, params = window(since, None)
        self.flush()
        with self._db_lock:
            cursor = self._db.execute(f"{_SELECT}{where} ORDER BY ts, id", params)
        for values in cursor:
            found = LedgerRow(*values)
            yield msgspec.structs.replace(found, cached=bool(found.cached))  # SQLite: 0/1

    def to_csv(self, fileobj: IO[str], since: float | None = None) -> int:
        """Write the rows as CSV with a header line; return the count. `ts` is ISO 8601 in
        UTC (2026-01-01T00:00:10.000+00:00), `cost_usd` a plain decimal (unknown: empty)."""
        return write_csv(self.rows(since), fileobj)

    def purge(self, before: float) -> int:
        """Delete the rows older than `before` (unix time); return how many."""
        self.flush()
        with self._db_lock:
            deleted = self._db.execute("DELETE FROM requests WHERE ts < ?", (before,)).rowcount
            self._written()
        return int(deleted)

    def _retain(self) -> None:
        self._retention.run(self.purge, sqlite3.Error)

    def close(self) -> None:
        self._closed = True  # (a write from now on is committed by its caller, never aside)
        if self._aside is not None:  # first: it may be importing right now
            self._aside.stop()
            self._aside = None
        imported = self.flush()
        with self._db_lock, self._lock:
            if self._journal is not None:
                self._journal.close(self._db, imported=imported)
                self._journal = None
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
