"""Puts into a large response store: wholly random ids against time-ordered ones.

    python benchmarks/store_ids.py [--rows 200000] [--puts 20000]

The response store (`thanos_asgi/governance/response_store.py`) keys SQLite rows by the
response id. A store that has grown (retention is days) has an index of many pages; a random
id lands on any of them, which SQLite must read back in, while a time-ordered one lands on the
last. Each variant fills a fresh store (`--rows` rows of 1.1 KB, the size of a short stored
exchange) in one transaction, then times `--puts` more in transactions of 8, with the
store's settings (WAL, `synchronous=NORMAL`, no automatic checkpoint; a passive one every 300
commits from a second connection, as the store's checkpoint thread does). Wall and CPU time a
put, in this process (SQLite works in the calling thread).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ENTRY = os.urandom(1100)
INSERT = "INSERT OR REPLACE INTO responses (id, expires, entry) VALUES (?, ?, ?)"
SCHEMA = (
    "CREATE TABLE responses (id TEXT PRIMARY KEY, expires REAL NOT NULL, entry BLOB NOT NULL)",
    "CREATE INDEX responses_expires ON responses (expires)",
)
IDS: dict[str, Callable[[], str]] = {
    "random": lambda: f"resp_{secrets.token_hex(24)}",
    "time-ordered": lambda: f"resp_{int(time.time()):08x}{secrets.token_hex(20)}",
}


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def measure(make_id: Callable[[], str], rows: int, puts: int, folder: Path) -> tuple[float, float]:
    path = folder / "responses.db"
    db = _connect(path)
    for statement in SCHEMA:
        db.execute(statement)
    with db:
        db.execute("BEGIN")
        db.executemany(INSERT, [(make_id(), time.time(), ENTRY) for _ in range(rows)])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoints = _connect(path)
    wall, cpu = time.perf_counter(), time.process_time()
    for commit in range(puts // 8):
        batch = [(make_id(), time.time(), ENTRY) for _ in range(8)]
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, batch)
        if commit % 300 == 0:
            checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    db.close()
    checkpoints.close()
    return wall * 1e6 / puts, cpu * 1e6 / puts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows stored before")
    parser.add_argument("--puts", type=int, default=20_000, help="puts timed")
    args = parser.parse_args()
    print(f"{args.rows:,} rows stored, then {args.puts:,} puts in commits of 8")
    print("| ids | wall us a put | CPU us a put |\n|---|---|---|")
    for name, make_id in IDS.items():
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu = measure(make_id, args.rows, args.puts, Path(folder))
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
