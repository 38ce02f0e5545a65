"""Client keys: how they are made, stored and found.

A key is `thk_` + 40 random URL-safe characters. Only its SHA-256 digest is ever stored
(`sha256:<hex>`), in config (`key_hash`) or in the key store, a small SQLite file managed by
`thanos keys create|list|revoke`. Keys are random and long, so a fast digest is the right
tool (a password hash would only slow every request down). Lookup finds the digest in a
dict and confirms it with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thanos_asgi.context import KeyPolicy
from thanos_asgi.exceptions import InvalidRequest

if TYPE_CHECKING:
    from thanos_asgi.config import ClientKeyConfig

PREFIX = "thk_"
RELOAD_EVERY = 1.0  # seconds between checks for changes made by `thanos keys`

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, hash TEXT UNIQUE NOT NULL, created REAL NOT NULL, revoked REAL,
    models TEXT NOT NULL DEFAULT '[]', providers TEXT NOT NULL DEFAULT '[]',
    rpm INTEGER, tpm INTEGER, budget_usd REAL, admin INTEGER NOT NULL DEFAULT 0
)
"""
_LIMITS = ("models", "providers", "rpm", "tpm", "budget_usd")  # what `update` may change
_EXISTS = "SELECT 1 FROM keys WHERE id = ? AND revoked IS NULL"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(30)


def digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def policy_of(entry: ClientKeyConfig) -> KeyPolicy:
    return KeyPolicy(
        key_id=entry.id,
        models=tuple(entry.models),
        providers=tuple(entry.providers),
        rpm=entry.rpm,
        tpm=entry.tpm,
        budget_usd=entry.budget_usd,
        admin=entry.admin,
    )


class KeyStore:
    """Keys created at run time, in SQLite (WAL), readable while the gateway serves."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        os.chmod(self.path, 0o600)
        self._writes = 0  # data_version only sees other connections' commits

    def create(self, key_id: str, **limits: Any) -> str:
        """Store a new key and return its secret, which is shown once and never stored."""
        secret = new_secret()
        row = {"models": "[]", "providers": "[]", "admin": 0}
        for name in ("models", "providers"):
            if limits.get(name):
                row[name] = json.dumps(list(limits[name]))
        try:
            self._db.execute(
                "INSERT INTO keys (id, hash, created, models, providers, rpm, tpm, budget_usd,"
                " admin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    digest(secret),
                    time.time(),
                    row["models"],
                    row["providers"],
                    limits.get("rpm"),
                    limits.get("tpm"),
                    limits.get("budget_usd"),
                    int(bool(limits.get("admin"))),
                ),
            )
        except sqlite3.IntegrityError:
            raise InvalidRequest(f"a key with id '{key_id}' exists already") from None
        self._writes += 1
        return secret

    def update(self, key_id: str, **limits: Any) -> bool:
        """Change the limits and allow-lists named in `limits` (None clears a limit) of a
        key that is not revoked; False if there is none."""
        columns = [name for name in _LIMITS if name in limits]
        values = [
            json.dumps(list(limits[name] or ()))
            if name in ("models", "providers")
            else limits[name]
            for name in columns
        ]
        if not columns:
            return bool(self._db.execute(_EXISTS, (key_id,)).fetchone())
        assignments = ", ".join(f"{name} = ?" for name in columns)
        cursor = self._db.execute(
            f"UPDATE keys SET {assignments} WHERE id = ? AND revoked IS NULL", (*values, key_id)
        )
        self._writes += 1
        return cursor.rowcount == 1

    def revoke(self, key_id: str) -> bool:
        cursor = self._db.execute(
            "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), key_id)
        )
        self._writes += 1
        return cursor.rowcount == 1

    def listing(self) -> list[dict[str, Any]]:
        """Every key without its digest: id, created, revoked and limits."""
        cursor = self._db.execute(
            "SELECT id, created, revoked, models, providers, rpm, tpm, budget_usd, admin"
            " FROM keys ORDER BY created"
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def active(self) -> Iterator[tuple[str, KeyPolicy]]:
        cursor = self._db.execute(
            "SELECT id, hash, models, providers, rpm, tpm, budget_usd, admin FROM keys"
            " WHERE revoked IS NULL"
        )
        for key_id, hashed, models, providers, rpm, tpm, budget, admin in cursor:
            policy = KeyPolicy(
                key_id,
                tuple(json.loads(models)),
                tuple(json.loads(providers)),
                rpm,
                tpm,
                budget,
                bool(admin),
            )
            yield hashed, policy

    def version(self) -> tuple[int, int]:
        """Changes whenever keys change, through this store or another process's."""
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0]), self._writes

    def close(self) -> None:
        self._db.close()


class KeyRing:
    """Every valid key's digest and policy: config keys plus the store's, kept fresh."""

    def __init__(
        self, configured: Iterable[ClientKeyConfig], store: KeyStore | None = None
    ) -> None:
        self.static: dict[str, KeyPolicy] = {}
        for entry in configured:
            hashed = entry.key_hash or (digest(entry.key) if entry.key else None)
            if hashed:
                self.static[hashed] = policy_of(entry)
        self.store = store
        self._stored: dict[str, KeyPolicy] = {}
        self._version = (-1, -1)
        self._checked = 0.0
        self._refresh()

    @property
    def active(self) -> bool:
        """Whether any key exists; without keys the gateway is open (loopback only)."""
        self._maybe_refresh()
        return bool(self.static or self._stored)

    def lookup(self, secret: str) -> KeyPolicy | None:
        hashed = digest(secret)
        self._maybe_refresh()
        for table in (self.static, self._stored):
            for known, policy in _candidates(table, hashed):
                if hmac.compare_digest(known, hashed):
                    return policy
        return None

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if self.store is not None and now - self._checked >= RELOAD_EVERY:
            self._checked = now
            self._refresh()

    def _refresh(self) -> None:
        if self.store is None:
            return
        version = self.store.version()
        if version != self._version:
            self._version = version
            self._stored = dict(self.store.active())


def _candidates(table: dict[str, KeyPolicy], hashed: str) -> list[tuple[str, KeyPolicy]]:
    policy = table.get(hashed)
    return [(hashed, policy)] if policy is not None else []
