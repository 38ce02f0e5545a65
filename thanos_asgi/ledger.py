"""The usage ledger: one SQLite row per request (time, key id, provider, model, tokens, cost).

Durability: the database runs in WAL mode with `synchronous=NORMAL` and autocommit, so every
`record` is its own committed transaction, appended to the `-wal` file with write(2) before
`record` returns. A process crash (kill -9, OOM kill) right after the response loses nothing:
the bytes are in the OS page cache, and the next open replays the WAL. What NORMAL gives up is
an fsync per commit: an OS crash or power cut can lose the last commits (never corrupt the
file). That is the requirement, and it keeps a row at ~0.1 ms on a VM disk, where an fsync per
commit (`synchronous=FULL`) measured ~3 ms.

Group commit: inside an event loop the gateway calls `queue`, which batches every row of one
loop turn into a single transaction (one WAL append and one lock round-trip for them all,
instead of one each) and gives back a future that is done once they are committed; a
response waits for it before it goes out, so the guarantee above still holds.

Only the columns below are stored: never a secret (`key_id` is a client key's id, not the key),
a prompt or a completion. Times are unix seconds; `report(group_by="day")` buckets by UTC day.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Generator, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any, Literal

import msgspec

__all__ = ["COLUMNS", "GroupBy", "Ledger", "LedgerRow"]

log = logging.getLogger("thanos_asgi")
LATER = 0.02  # seconds a row nobody waits for may stay queued
CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints while rows are written

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


COLUMNS: tuple[str, ...] = LedgerRow.__struct_fields__

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
    latency_ms REAL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE INDEX IF NOT EXISTS requests_key_id ON requests (key_id);
"""
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
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
_REPORT_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",  # the sum of the known costs
    "unpriced_requests",  # rows whose cost is unknown: `cost_usd` leaves them out
)


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
    # an fsync, a stall of milliseconds on the event loop); `_Checkpointer` does it aside.
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.executescript(_SCHEMA)
    return db


class _Checkpointer:
    """Copies the WAL into the database file from a thread of its own, at most once every
    `CHECKPOINT_EVERY` seconds while rows are being written (SQLite releases the GIL while it
    writes and syncs). A passive checkpoint never blocks writers; one that cannot finish
    (a reader holds an old snapshot) is simply tried again next time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dirty = False  # set by every commit: a plain flag, no lock on the hot path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thanos-ledger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                if self.dirty:
                    self.dirty = False
                    self._checkpoint(db)
        finally:
            db.close()

    @staticmethod
    def _checkpoint(db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("usage ledger: checkpoint failed (will retry): %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _window(since: float | None, until: float | None) -> tuple[str, list[float]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class Ledger:
    """The usage ledger in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._db = _connect(self.path)
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._batch: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None  # the flush to come
        self._soon = False  # ... in the next loop turn
        self._checkpointer: _Checkpointer | None = None  # started by the first write

    def _written(self) -> None:
        if self._checkpointer is None:
            if str(self.path) == ":memory:":
                return
            self._checkpointer = _Checkpointer(self.path)
        self._checkpointer.dirty = True

    def record(self, row: LedgerRow) -> None:
        """Insert and commit `row` before returning (one cached prepared INSERT, autocommit)."""
        values = msgspec.structs.astuple(row)
        with self._lock:
            self._db.execute(_INSERT, values)
        self._written()

    def queue(self, row: LedgerRow, *, soon: bool = True) -> asyncio.Future[None]:
        """Commit `row` with the others queued meanwhile; the future is done once they are
        (a failed commit is logged, and the future still completes). `soon`: in the next
        loop turn; else within `LATER` seconds (or when someone calls `hasten`), which
        gathers the rows of a busy gateway into far fewer transactions."""
        self._pending.append(msgspec.structs.astuple(row))
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        if soon:
            self.hasten()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LATER, self.flush)
        return self._batch

    def hasten(self) -> None:
        """Commit the queued rows in the next loop turn."""
        if self._batch is not None and not self._soon:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._soon = asyncio.get_running_loop().call_soon(self.flush), True

    def committed(self, future: asyncio.Future[None]) -> Awaitable[None]:
        """`future` (from `queue`), hastened when someone starts waiting for it."""
        return _Committed(self, future)

    def flush(self) -> None:
        """Commit the queued rows now, in one transaction."""
        rows, batch = self._pending, self._batch
        self._pending, self._batch = [], None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._soon = None, False
        if rows:
            with self._lock:
                try:
                    if len(rows) == 1:  # autocommit: a third cheaper than BEGIN ... COMMIT
                        self._db.execute(_INSERT, rows[0])
                    else:
                        self._db.execute("BEGIN")
                        self._db.executemany(_INSERT, rows)
                        self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    log.error("usage ledger: %d rows not recorded: %s", len(rows), exc)
            self._written()
        if batch is not None and not batch.done():
            batch.set_result(None)

    def report(
        self, *, group_by: GroupBy, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group in `[since, until)`, ordered by group."""
        expression, name = _GROUPS[group_by]
        where, params = _window(since, until)
        sql = f"SELECT {expression} AS grp, {_SUMS} FROM requests{where} GROUP BY grp ORDER BY grp"
        with self._lock:
            found = self._db.execute(sql, params).fetchall()
        return [_report_row(name, row) for row in found]

    def total_cost(self, since: float, until: float | None = None) -> float:
        """USD of the priced requests in `[since, until)`."""
        where, params = _window(since, until)
        with self._lock:
            found = self._db.execute(f"SELECT TOTAL(cost_usd) FROM requests{where}", params)
            (total,) = found.fetchone()
        return float(total)

    def rows(self, since: float | None = None) -> Iterator[LedgerRow]:
        """Every row from `since` on, oldest first."""
        where, params = _window(since, None)
        with self._lock:
            cursor = self._db.execute(f"{_SELECT}{where} ORDER BY ts, id", params)
        for values in cursor:
            yield LedgerRow(*values)

    def to_csv(self, fileobj: IO[str], since: float | None = None) -> int:
        """Write the rows as CSV with a header line (unknown cost: empty); return the count."""
        writer = csv.writer(fileobj, lineterminator="\n")
        writer.writerow(COLUMNS)
        count = 0
        for row in self.rows(since):
            writer.writerow(msgspec.structs.astuple(row))
            count += 1
        return count

    def close(self) -> None:
        self.flush()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Committed:
    __slots__ = ("future", "ledger")

    def __init__(self, ledger: Ledger, future: asyncio.Future[None]) -> None:
        self.ledger, self.future = ledger, future

    def __await__(self) -> Generator[Any, None, None]:
        if not self.future.done():
            self.ledger.hasten()
        return self.future.__await__()


def _report_row(name: str, row: tuple[Any, ...]) -> dict[str, Any]:
    group, requests, *sums, cost, unpriced = row
    tokens = [int(value) for value in sums]
    return {
        name: group,
        **dict(zip(_REPORT_FIELDS, [requests, *tokens, cost, unpriced], strict=True)),
    }
