"""The admin audit log and the dashboard's session secret, in the key store's SQLite file.

Every admin action (a key created, changed or revoked, a config reload, a sign-in) is one
row: when, which admin key did it (its id, never a secret), what, on what, and a short
detail. The same file holds the secret that signs dashboard sessions, made once, so that a
session stays valid across restarts and in every worker process that shares the file.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_id TEXT, action TEXT NOT NULL,
    target TEXT, detail TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
MAX_LISTED = 1000


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, timeout=10.0, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def write(
        self,
        key_id: str | None,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO audit (ts, key_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), key_id, action, target, json.dumps(detail or {}, sort_keys=True)),
        )

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` entries (at most `MAX_LISTED`), newest first."""
        cursor = self._db.execute(
            "SELECT id, ts, key_id, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
            (max(1, min(limit, MAX_LISTED)),),
        )
        return [
            {"id": i, "ts": ts, "key_id": key, "action": a, "target": t, "detail": json.loads(d)}
            for i, ts, key, a, t, d in cursor
        ]

    def session_secret(self) -> bytes:
        """The key that signs dashboard sessions: made on first use, then shared."""
        self._db.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('session_secret', ?)",
            (secrets.token_hex(32),),
        )
        row = self._db.execute("SELECT value FROM meta WHERE name = 'session_secret'").fetchone()
        return bytes.fromhex(row[0])

    def close(self) -> None:
        self._db.close()
