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
from pathlib import Path
from typing import Protocol

from thanos_asgi.config import Config
from thanos_asgi.governance.state import StateBackend

MEMORY_ITEMS = 2_000
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
    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS responses "
        "(id TEXT PRIMARY KEY, expires REAL NOT NULL, entry BLOB NOT NULL)"
    )

    def __init__(self, path: Path, ttl: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # users' conversations: 0600
        self.ttl = ttl
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(self._SCHEMA)
        # every put deletes the expired rows: without this index, a scan of the whole table
        self._db.execute("CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)")
        self._lock = asyncio.Lock()
        self._pending: list[tuple[str, float, bytes]] = []  # (id, expires, entry) to write

    async def get(self, response_id: str) -> bytes | None:
        query = "SELECT entry FROM responses WHERE id = ? AND expires > ?"
        row = await self._run(query, (response_id, time.time()))
        entry = row[0] if row else None
        return bytes(entry) if isinstance(entry, bytes | memoryview) else None

    async def put(self, response_id: str, entry: bytes) -> None:
        """Written before this returns: puts waiting for the writer go in its next batch (one
        transaction, one trip to the thread), so concurrent answers do not queue one by one."""
        self._pending.append((response_id, time.time() + self.ttl, entry))
        async with self._lock:
            if self._pending:  # else a batch before this one took the entry, and is written
                rows, self._pending = self._pending, []
                await asyncio.to_thread(self._write, rows)

    def _write(self, rows: list[tuple[str, float, bytes]]) -> None:
        insert = "INSERT OR REPLACE INTO responses (id, expires, entry) VALUES (?, ?, ?)"
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM responses WHERE expires <= ?", (time.time(),))
            self._db.executemany(insert, rows)

    async def delete(self, response_id: str) -> bool:
        found = await self.get(response_id) is not None
        await self._run("DELETE FROM responses WHERE id = ?", (response_id,))
        return found

    async def _run(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        async with self._lock:
            return await asyncio.to_thread(self._execute, sql, args)

    def _execute(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
        return row

    def close(self) -> None:
        self._db.close()
