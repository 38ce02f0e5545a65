"""What the SQLite files (the usage ledger, the response store) share: WAL checkpoints made
aside, off the event loop, never inside a commit (their writers set `wal_autocheckpoint=0`).
The ledger keeps a thread of its own (`Checkpointer`); the response store hands
`checkpoint_file` to a worker thread now and then."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("thanos_asgi")
CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints while rows are written


class Checkpointer:
    """Copies the WAL into the database file from a thread of its own, at most once every
    `CHECKPOINT_EVERY` seconds while rows are being written (SQLite releases the GIL while it
    writes and syncs). A passive checkpoint never blocks writers; one that cannot finish
    (a reader holds an old snapshot) is simply tried again next time. The connections that
    write set `PRAGMA wal_autocheckpoint=0`, so no commit checkpoints (page writes and an
    fsync, a stall of milliseconds) on the event loop."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.dirty = False  # set by every commit: a plain flag, no lock on the hot path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"thanos-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                if self.dirty:
                    self.dirty = False
                    checkpoint(db, self.name)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def checkpoint(db: sqlite3.Connection, name: str) -> None:
    """A passive checkpoint: never blocks writers; one that cannot finish is tried again."""
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as exc:
        log.warning("%s: checkpoint failed (will retry): %s", name, exc)


def checkpoint_file(path: Path, name: str) -> None:
    """`checkpoint` on a connection of its own (for a worker thread)."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    except sqlite3.Error as exc:
        log.warning("%s: checkpoint failed (will retry): %s", name, exc)
        return
    try:
        checkpoint(db, name)
    finally:
        db.close()
