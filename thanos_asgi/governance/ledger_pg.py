"""The usage ledger in PostgreSQL: one table every replica writes to and reads from.

The same interface and the same durability as the SQLite `Ledger`: `queue` appends the row to
this process's journal (one write(2), see `journal.py`) before the answer goes out, and a thread
of its own imports the queued rows into PostgreSQL, all that waited in one batch, while the
event loop goes on. A process that dies leaves its journal behind; the next one to open the
ledger with the same journal directory imports it and deletes it.

No row is imported twice: each row carries a key made of its journal file's name and its offset
there (`row_key`, the primary key), and every insert is `ON CONFLICT DO NOTHING`; a batch that
was committed just before a crash and is read again from the journal adds nothing.

The driver is psycopg 3 (`pip install 'thanos-asgi[postgres]'`): a blocking connection fits the
import thread, and `executemany` sends a batch in one pipeline (one round trip).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any

import msgspec
import psycopg

from thanos_asgi.config.describe import mask_url
from thanos_asgi.governance import journal as _journal
from thanos_asgi.governance.ledger_pg_schema import TABLE, VIEW, migrate
from thanos_asgi.governance.ledger_rows import (
    _REPORT_FIELDS,
    COLUMNS,
    GroupBy,
    LedgerRow,
    Spend,
    report_row,
    window,
    write_csv,
)
from thanos_asgi.governance.ledgers import LedgerUnavailable
from thanos_asgi.governance.retention import Retention

__all__ = ["PgLedger"]

log = logging.getLogger("thanos_asgi")
MAX_PENDING = 100_000  # rows kept for a retry while PostgreSQL is unreachable
RETRY_AFTER = 1.0  # seconds between attempts while PostgreSQL refuses a batch

_INSERT = (
    f"INSERT INTO {TABLE} (row_key, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))}) ON CONFLICT (row_key) DO NOTHING"
)
_GROUPS = MappingProxyType(
    {
        "day": ("to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "day"),
        "provider": ("provider", "provider"),
        "model": ("model", "model"),
        "key": ("key_id", "key_id"),
    }
)
_SUMS = """COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
    COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0),
    COALESCE(SUM(cost_usd), 0)::float8, COUNT(*) - COUNT(cost_usd)"""
assert len(_REPORT_FIELDS) == 7  # the sums above, in the SQLite ledger's order

Row = tuple[Any, ...]  # (row_key, *the LedgerRow's values)


class PgLedger:
    """The usage ledger in a PostgreSQL database shared by every replica.

    `journals`: this process's journal directory (one per data directory); None keeps no
    journal (for `thanos usage` and other readers: `queue` then is `record`)."""

    shared = True

    def __init__(
        self, url: str, *, journals: Path | None = None, retention_days: float | None = None
    ) -> None:
        self.url = url
        self.shown = mask_url(url)  # what logs and errors may show: never the password
        self.retention_days = retention_days
        self._db_lock = threading.Lock()  # the connection: one statement at a time
        self._lock = threading.Lock()  # the journal and the queued rows
        self._db: psycopg.Connection[Row] | None = None
        self._pending: list[Row] = []
        self._journals = journals
        self._journal: _journal.Journal | None = None
        self._wake = threading.Event()
        self._stop = False
        self._retention = Retention(retention_days)
        with self._db_lock:
            try:
                migrate(self._connect())
            except psycopg.Error as exc:
                self._drop()
                raise LedgerUnavailable(_reason(exc)) from None
        log.info("usage ledger: PostgreSQL at %s, journal in %s", self.shown, journals or "(none)")
        if journals is not None and journals.is_dir():
            self.recover()
        self._retain()
        self._thread = threading.Thread(target=self._run, name="thanos-ledger-pg", daemon=True)
        self._thread.start()

    def _connect(self) -> psycopg.Connection[Row]:
        """The open connection, or a new one (under `_db_lock`)."""
        if self._db is None or self._db.closed:
            try:
                self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise psycopg.OperationalError(
                    f"usage ledger: cannot connect to {self.shown}: {_reason(exc)}"
                ) from None
        return self._db

    def _drop(self) -> None:
        """After an error: drop the connection, so the next use opens a fresh one."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def record(self, row: LedgerRow) -> None:
        """Insert and commit `row` before returning."""
        values = (uuid.uuid4().hex, *msgspec.structs.astuple(row))
        with self._db_lock:
            try:
                self._connect().execute(_INSERT, values)
            except psycopg.Error:
                self._drop()
                raise

    def queue(self, row: LedgerRow) -> None:
        """Make `row` durable now (one append to the journal) and have the import thread
        insert it with whatever else is queued. Without a journal: `record`."""
        if self._journals is None:
            self.record(row)
            return
        values = msgspec.structs.astuple(row)
        with self._lock:
            key = None
            try:
                journal = self._journal or self._open_journal()
                offset = journal.size
                journal.append(_journal.encode_row(values) + b"\n")
                key = f"{journal.name}:{offset}"
            except OSError as exc:  # still imported with the others, unless we crash first
                log.error("usage ledger: journal write failed: %s", exc)
            self._pending.append((key or uuid.uuid4().hex, *values))
        if not self._wake.is_set():  # (a plain read: the import thread is woken once a batch)
            self._wake.set()

    def _open_journal(self) -> _journal.Journal:
        assert self._journals is not None
        self._journals.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._journal = _journal.Journal(self._journals)
        return self._journal

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            if not self.flush():
                time.sleep(RETRY_AFTER)  # PostgreSQL is down: the rows wait in the journal
                self._wake.set()
            self._retain()

    def flush(self) -> bool:
        """Import the queued rows now, in one batch; False if PostgreSQL refused them
        (logged; they are kept for the next try, and are in the journal meanwhile)."""
        with self._db_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return True
            try:
                self._insert(rows)
            except psycopg.Error as exc:
                self._drop()
                log.error("usage ledger: %d rows not recorded yet: %s", len(rows), _reason(exc))
                with self._lock:
                    self._pending[:0] = rows[-MAX_PENDING:]
                return False
        with self._lock:  # every row appended so far is in: a full journal can go
            journal = self._journal
            if journal is not None and not self._pending and journal.size >= _journal.ROTATE_AT:
                try:
                    journal.renew(None)
                except OSError as exc:  # it goes on in the old file, and tries again later
                    log.warning("usage ledger: could not start a new journal: %s", exc)
        return True

    def _insert(self, rows: list[Row]) -> None:
        """Insert `rows` (under `_db_lock`). A row PostgreSQL refuses for its data (a number
        past BIGINT from a hostile upstream) is logged and dropped, never retried forever."""
        rows = [_clean(row) for row in rows]
        db = self._connect()
        try:
            with db.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        except psycopg.DataError:
            for row in rows:  # the rows already in are skipped by their key
                try:
                    db.execute(_INSERT, row)
                except psycopg.DataError as exc:
                    log.error("usage ledger: a row was refused and dropped: %s", _reason(exc))

    def recover(self) -> int:
        """Import the journals of dead processes in `journals`, delete them, return the
        count of rows read (rows imported before are skipped by their key)."""
        assert self._journals is not None
        imported = 0
        for path, fd in _journal.dead(self._journals):
            try:
                rows = _journal_rows(path.name, fd) if path.suffix == _journal.SUFFIX else []
                with self._db_lock:
                    try:
                        self._insert(rows)
                    except psycopg.Error:
                        self._drop()
                        raise
            except (OSError, psycopg.Error) as exc:
                log.error("usage journal: %s not recovered (kept): %s", path.name, _reason(exc))
                os.close(fd)
                continue
            if rows:
                log.warning("usage journal: %d rows recovered from %s", len(rows), path.name)
            imported += len(rows)
            _journal.remove(None, path, fd)
        return imported

    def _query(self, sql: str, params: list[Any] | tuple[Any, ...]) -> list[Row]:
        self.flush()
        with self._db_lock:
            try:
                return self._connect().execute(sql.encode(), params).fetchall()
            except psycopg.Error:
                self._drop()
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The SQLite ledger's `query` on the same rows: `sql` in the portable subset the admin
        API writes (`?` placeholders, the table `requests`), read from the `thanos_requests`
        view, which names its columns as the SQLite table does."""
        portable = sql.replace("%", "%%").replace("?", "%s")
        portable = portable.replace(" FROM requests", f" FROM {VIEW}")
        return [tuple(row) for row in self._query(portable, list(params))]

    def report(
        self, *, group_by: GroupBy, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group in `[since, until)`, ordered by group."""
        expression, name = _GROUPS[group_by]
        where, params = window(since, until, "%s")
        sql = (  # ordered as SQLite orders: NULL first, then by bytes
            f"SELECT {expression}, {_SUMS} FROM {TABLE}{where} "
            f'GROUP BY {expression} ORDER BY {expression} COLLATE "C" NULLS FIRST'
        )
        return [report_row(name, row) for row in self._query(sql, params)]

    def total_cost(self, since: float, until: float | None = None) -> float:
        """USD of the priced requests in `[since, until)`."""
        where, params = window(since, until, "%s")
        found = self._query(
            f"SELECT COALESCE(SUM(cost_usd), 0)::float8 FROM {TABLE}{where}", params
        )
        return float(found[0][0])

    def spend(self, since: float) -> Spend:
        """What the priced requests from `since` on cost, in all, per key and per provider,
        across every replica: what budgets are rebuilt from when the shared state lost them."""
        sql = (
            f"SELECT key_id, provider, COALESCE(SUM(cost_usd), 0)::float8 FROM {TABLE} "
            "WHERE ts >= %s GROUP BY key_id, provider"
        )
        spend = Spend()
        total = 0.0
        for key_id, provider, cost in self._query(sql, (since,)):
            total += cost
            if key_id is not None:
                spend.keys[key_id] = spend.keys.get(key_id, 0.0) + cost
            if provider:
                spend.providers[provider] = spend.providers.get(provider, 0.0) + cost
        return msgspec.structs.replace(spend, total=total)

    def rows(self, since: float | None = None) -> Iterator[LedgerRow]:
        """Every row from `since` on, oldest first."""
        where, params = window(since, None, "%s")
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{where} ORDER BY ts, seq"
        for values in self._query(sql, params):
            yield LedgerRow(*values)

    def to_csv(self, fileobj: IO[str], since: float | None = None) -> int:
        """The rows as CSV, as `Ledger.to_csv` writes them."""
        return write_csv(self.rows(since), fileobj)

    def purge(self, before: float) -> int:
        """Delete the rows older than `before` (unix time); return how many."""
        with self._db_lock:
            try:
                found = self._connect().execute(f"DELETE FROM {TABLE} WHERE ts < %s", (before,))
            except psycopg.Error:
                self._drop()
                raise
        return max(found.rowcount, 0)

    def _retain(self) -> None:
        self._retention.run(self.purge, psycopg.Error, _reason)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)
        try:
            imported = self.flush()
        except psycopg.Error:
            imported = False
        with self._lock:
            if self._journal is not None:
                self._journal.close(None, imported=imported and not self._pending)
                self._journal = None
        with self._db_lock:
            self._drop()

    def __enter__(self) -> PgLedger:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _journal_rows(name: str, fd: int) -> list[Row]:
    """Every readable row of a journal file, each with its key (file name and offset)."""
    width = len(COLUMNS)
    rows = []
    for offset, values in _journal.lines(fd):
        if values is not None and 0 < len(values) < width:  # an older version's row
            values = _journal.padded(values, width)
        if values is None or len(values) != width:
            log.error("usage journal: an unreadable row in %s was skipped", name)
            continue
        rows.append((f"{name}:{offset}", *values))
    return rows


def _clean(row: Row) -> Row:
    """PostgreSQL text cannot hold NUL: a model name with one (from a client) gets U+FFFD."""
    if any(isinstance(value, str) and "\x00" in value for value in row):
        return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)
    return row


def _reason(exc: BaseException) -> str:
    """An error's first line, for a log: psycopg's messages name the host, never a password."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
