"""Where stored Responses API answers live (`store: true`, `previous_response_id`, `GET` and
`DELETE /v1/responses/{id}`), each for `[responses] retention_days`.

- With `[state] backend = "redis"`: in the shared state, so every replica continues every
  conversation (`thanos:json:response:<id>` with the retention as its TTL).
- Else with `[responses] store_path` (`thanos serve` defaults it to `responses.db` in the data
  dir): SQLite, surviving restarts; expired rows are deleted as new ones arrive.
- Else (a library user with neither): in memory, the newest `MEMORY_ITEMS` kept.

Entries are opaque bytes here; the Responses front-end encodes and checks them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from thanos_asgi.config import Config
from thanos_asgi.governance._sqlite import CHECKPOINT_EVERY, checkpoint_file
from thanos_asgi.governance.state import StateBackend

MEMORY_ITEMS = 2_000
ON_LOOP = 64 * 1024  # bytes of an entry put on the event loop's connection; larger: a thread
SWEEP = 128  # expired rows a sweeping put deletes at most
SWEEP_EVERY = 16  # puts: one of this many also sweeps (the others are one INSERT)
_SWEEP = (
    "DELETE FROM responses WHERE rowid IN "
    "(SELECT rowid FROM responses WHERE expires <= ? ORDER BY expires LIMIT ?)"
)
T = TypeVar("T")
Row = tuple[str, float, bytes]  # id, expires, entry
DAY = 86_400.0


class ResponseStore(Protocol):
    async def get(self, response_id: str) -> bytes | None: ...

    async def put(self, response_id: str, entry: bytes) -> None: ...

    async def delete(self, response_id: str) -> bool: ...


def open_store(config: Config, state: StateBackend) -> ResponseStore:
    ttl = config.responses.retention_days * DAY
    if config.state.backend == "redis":
        return SharedStore(state, ttl)
    if config.responses.store_path:
        return SQLiteStore(Path(config.responses.store_path), ttl)
    return MemoryStore(ttl)


class MemoryStore:
    def __init__(self, ttl: float, limit: int = MEMORY_ITEMS) -> None:
        self.ttl, self.limit = ttl, limit
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, response_id: str) -> bytes | None:
        found = self._items.get(response_id)
        if found is None or found[1] <= time.time():
            self._items.pop(response_id, None)
            return None
        return found[0]

    async def put(self, response_id: str, entry: bytes) -> None:
        self._items[response_id] = (entry, time.time() + self.ttl)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None


class SharedStore:
    def __init__(self, state: StateBackend, ttl: float) -> None:
        self.state, self.ttl = state, ttl

    async def get(self, response_id: str) -> bytes | None:
        value = await self.state.get_json(f"response:{response_id}")
        return value.encode("latin-1") if isinstance(value, str) else None

    async def put(self, response_id: str, entry: bytes) -> None:
        await self.state.set_json(f"response:{response_id}", entry.decode("latin-1"), self.ttl)

    async def delete(self, response_id: str) -> bool:
        found = await self.get(response_id) is not None
        await self.state.set_json(f"response:{response_id}", None, 1.0)
        return found


class SQLiteStore:
    """A put of an entry up to `ON_LOOP` bytes runs on the event loop: one WAL append, no
    fsync with `synchronous=NORMAL`, tens of microseconds; a trip to a thread cost more than
    the write, and under load the thread's hand-offs halved the Responses API's throughput.
    The loop's connection never waits for SQLite's lock: when another process (a `--workers`
    sibling) holds it, the put goes to a thread whose connection waits up to 30 s. A larger
    entry (a long conversation) and every read (whose size is not known before it is read)
    go to a thread, reads on a connection of their own so they never push puts off the loop.
    WAL checkpoints run in a worker thread at most every `CHECKPOINT_EVERY` seconds while puts
    come (no thread of its own to stop), never inside a commit on the loop. A put is committed
    before it returns, so the next request (to this process or another) finds it."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS responses "
        "(id TEXT PRIMARY KEY, expires REAL NOT NULL, entry BLOB NOT NULL)"
    )

    def __init__(self, path: Path, ttl: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # users' conversations: 0600
        self.path, self.ttl = path, ttl
        self._slow = _connect(path, timeout=30.0)  # the thread's: waits for the lock
        self._slow.execute(self._SCHEMA)
        # every put deletes the expired rows: without this index, a scan of the whole table
        self._slow.execute("CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)")
        self._db = _connect(path, timeout=0.0)  # the loop's: never waits
        self._lock = asyncio.Lock()  # one thread trip at a time on `_slow`
        self._reader = _connect(path, timeout=30.0)
        self._read_lock = asyncio.Lock()
        self._checkpoint: asyncio.Future[None] | None = None  # the last one, in a thread
        self._checkpointed = time.monotonic()
        self._puts = 0  # (the first put sweeps)
        self._turn = False  # a put went in during this turn of the event loop
        self._queued: list[tuple[Row, asyncio.Future[None]]] = []  # the turn's later puts
        self._commits: set[asyncio.Task[None]] = set()  # batches gone to a thread

    async def get(self, response_id: str) -> bytes | None:
        query = "SELECT entry FROM responses WHERE id = ? AND expires > ?"
        async with self._read_lock:
            row = await asyncio.to_thread(_fetch, self._reader, query, (response_id, time.time()))
        entry = row[0] if row else None
        return bytes(entry) if isinstance(entry, bytes | memoryview) else None

    async def put(self, response_id: str, entry: bytes) -> None:
        row = (response_id, time.time() + self.ttl, entry)
        if len(entry) <= ON_LOOP and self._turn:  # with the turn's later puts, at its end
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            if not self._queued:  # (its own call, should the turn's never run)
                loop.call_soon(self._turn_ended)
            self._queued.append((row, future))
            await future
        else:  # the turn's first put goes in at once (alone, it waits for nothing)
            on_loop = len(entry) <= ON_LOOP
            if on_loop:
                self._turn = True
                asyncio.get_running_loop().call_soon(self._turn_ended)
            rows = [row]
            await self._run(partial(_write, rows=rows, sweeps=self._sweeps(rows)), on_loop)
        self._written()

    def _turn_ended(self) -> None:
        self._turn = False
        if self._queued:
            self._commit()

    def _sweeps(self, rows: list[Row]) -> int:
        """How many sweeps `rows` are due (one per `SWEEP_EVERY` puts; the first put sweeps)."""
        first, self._puts = self._puts, self._puts + len(rows)
        return (self._puts - 1) // SWEEP_EVERY - (first - 1) // SWEEP_EVERY

    def _commit(self) -> None:
        queued, self._queued = self._queued, []
        rows = [row for row, _ in queued]
        write = partial(_write, rows=rows, sweeps=self._sweeps(rows))
        try:
            write(self._db)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                _settle(queued, exc)
                return
        except Exception as exc:  # (any: an exception left here would hang every put)
            _settle(queued, exc)
            return
        else:
            _settle(queued, None)
            return
        task = asyncio.get_running_loop().create_task(self._run(write, on_loop=False))
        self._commits.add(task)
        task.add_done_callback(lambda done: _settle(queued, _outcome(done)))
        task.add_done_callback(self._commits.discard)

    def _written(self) -> None:
        if time.monotonic() - self._checkpointed < CHECKPOINT_EVERY:
            return
        if self._checkpoint is None or self._checkpoint.done():
            self._checkpointed = time.monotonic()
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(None, checkpoint_file, self.path, "response store")
            self._checkpoint = job

    async def delete(self, response_id: str) -> bool:
        found = await self.get(response_id) is not None
        delete = "DELETE FROM responses WHERE id = ?"
        await self._run(lambda db: _fetch(db, delete, (response_id,)), on_loop=False)
        return found

    async def _run(self, call: Callable[[sqlite3.Connection], T], on_loop: bool) -> T:
        """`call` on the loop's connection if `on_loop`; in a thread on the waiting one when
        not, or when SQLite's lock is taken (a checkpoint, another process's write, a thread
        trip of ours). Puts try the loop's connection even while thread trips queue: one that
        waited for a lock must not send every later put to wait in line behind it."""
        if on_loop:
            try:
                return call(self._db)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        async with self._lock:
            return await asyncio.to_thread(call, self._slow)

    def close(self) -> None:
        for db in (self._db, self._slow, self._reader):
            db.close()


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # done aside (`_written`)
    return db


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _fetch(db: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
    row: tuple[object, ...] | None = db.execute(sql, args).fetchone()
    return row


def _write(db: sqlite3.Connection, rows: list[Row], sweeps: int) -> None:
    """`rows` in, in one transaction; with `sweeps`, up to `SWEEP` expired rows out for each
    (an index range, usually empty; bounded so that a store that sat idle past its retention
    is not cleared at once on the loop). One put in `SWEEP_EVERY` sweeps, removing up to eight
    times what those puts add, so the expired ones are soon gone. A lone put that does not
    sweep is a single INSERT: a transaction and a range probe on every put were a tenth of a
    stored Responses stream's CPU. The first put of a turn of the event loop goes in at once,
    the turn's later ones share a commit at its end (41 us a row alone, 15 in eights)."""
    insert = "INSERT OR REPLACE INTO responses (id, expires, entry) VALUES (?, ?, ?)"
    if len(rows) == 1 and not sweeps:
        db.execute(insert, rows[0])
        return
    with db:
        db.execute("BEGIN IMMEDIATE")
        if sweeps:
            db.execute(_SWEEP, (time.time(), SWEEP * sweeps))
        db.executemany(insert, rows)


def _outcome(task: asyncio.Task[None]) -> BaseException | None:
    if task.cancelled():
        return ConnectionError("the response store was closed")
    return task.exception()


def _settle(queued: list[tuple[Row, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, future in queued:
        if future.done():  # (its request was cancelled)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
