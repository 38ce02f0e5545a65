"""The PostgreSQL ledger's schema, as versioned migrations applied at start.

`thanos_migrations` lists the versions applied. `migrate` takes a transaction-scoped advisory
lock first, so replicas starting together apply each migration once: the others wait for the
lock, then find it applied. A migration is never edited once released; a change is a new one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("thanos_asgi")

LOCK_ID = 0x7468616E6F73  # "thanos": the advisory lock migrations run under
TABLE = "thanos_ledger"
VIEW = "thanos_requests"  # the rows as the SQLite ledger's `requests` table shows them

# (version, what it does, its SQL): applied in order, each in the transaction holding the lock
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "the ledger table",
        f"""
        CREATE TABLE {TABLE} (
            seq BIGSERIAL,
            row_key TEXT PRIMARY KEY,
            ts DOUBLE PRECISION NOT NULL,
            request_id TEXT,
            key_id TEXT,
            provider TEXT,
            model TEXT,
            prompt_tokens BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            cached_tokens BIGINT NOT NULL DEFAULT 0,
            reasoning_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION NULL,
            status TEXT,
            latency_ms DOUBLE PRECISION,
            credential TEXT NULL,
            cached BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE INDEX {TABLE}_ts ON {TABLE} (ts);
        CREATE INDEX {TABLE}_key_ts ON {TABLE} (key_id, ts);
        """,
    ),
    (
        2,
        "a view with the SQLite ledger's column names, for the admin API's queries",
        f"""
        CREATE VIEW {VIEW} AS SELECT seq AS id, ts, request_id, key_id, provider, model,
            prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_usd,
            status, latency_ms, credential, cached FROM {TABLE};
        """,
    ),
)


def migrate(db: psycopg.Connection[tuple[object, ...]]) -> int:
    """Bring the schema up to date; return how many migrations this call applied."""
    applied = 0
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS thanos_migrations (version INT PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        found = db.execute("SELECT version FROM thanos_migrations").fetchall()
        done = {int(str(version)) for (version,) in found}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            db.execute(sql.encode())
            db.execute(
                "INSERT INTO thanos_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            log.info("usage ledger: migration %d applied (%s)", version, name)
            applied += 1
    return applied
