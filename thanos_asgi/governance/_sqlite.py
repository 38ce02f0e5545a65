"""What the SQLite files (the usage ledger, the response store) share: WAL checkpoints made
aside, off the event loop, never inside a commit (their writers set `wal_autocheckpoint=0`).
The ledger keeps a thread of its own (`Aside`), which also imports its queued rows; the
response store hands `checkpoint_file` to a worker thread now and then."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("thanos_asgi")
CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints while rows are written
WAL_LIMIT = 64 * 1024 * 1024  # bytes of WAL file past which a checkpoint empties it


class Aside:
    """A SQLite file's thread of its own, so that neither its imports nor its checkpoints
    stall the event loop (SQLite releases the GIL while it writes and syncs):

    - `work` (the ledger's import of its queued rows) runs `later` seconds after a `poke`,
      with whatever else was queued meanwhile: one transaction for all of them;
    - the WAL is copied into the database file at most once every `CHECKPOINT_EVERY`
      seconds while rows are written (`dirty`). A passive checkpoint never blocks writers;
      one that cannot finish (a reader holds an old snapshot) is tried again next time. The
      connections that write set `PRAGMA wal_autocheckpoint=0`, so no commit checkpoints
      (page writes and an fsync, a stall of milliseconds) on the event loop."""

    def __init__(
        self, path: Path, name: str, work: Callable[[], object] | None = None, later: float = 0.0
    ) -> None:
        self.path, self.name, self.later = path, name, later
        self.dirty = False  # set by every commit: a plain flag, no lock on the hot path
        self._work = work
        self._poked = False  # a `poke` is waiting for `work`: later pokes need not wake us
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"thanos-{name}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Have `work` run within `later` seconds (once for every poke until it runs)."""
        if not self._poked:
            self._poked = True
            self._wake.set()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        due = time.monotonic() + CHECKPOINT_EVERY
        try:
            while not self._stop.is_set():
                if self._wake.wait(max(due - time.monotonic(), 0.0)):
                    if self._stop.wait(self.later):
                        break  # (`stop`'s caller does the last `work` itself)
                    self._wake.clear()
                    self._poked = False  # before `work` takes the queue: none is missed
                    if self._work is not None:
                        self._do(self._work)
                if time.monotonic() >= due:
                    due = time.monotonic() + CHECKPOINT_EVERY
                    if self.dirty:
                        self.dirty = False
                        checkpoint(db, self.path, self.name)
        finally:
            db.close()

    def _do(self, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # a bug must not end the thread: the rows wait for the next try
            log.exception("%s: writing aside failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)


def checkpoint(db: sqlite3.Connection, path: Path, name: str, limit: int = WAL_LIMIT) -> None:
    """A passive checkpoint, which never blocks writers; one that cannot finish is tried again.

    Under writes that never pause, no passive checkpoint finishes (frames arrive while it
    copies), so the WAL never starts over and its file grows without end: ~8 MB a second of
    stored Responses at 1,000 a second, kept after the load stops. Once the file is past `limit`
    bytes, a truncating checkpoint waits for the writer of the moment, holds off the next ones
    while it copies what is left (the event loop's connections do not wait: their writes go to
    a thread meanwhile) and empties the file."""
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if _size(Path(f"{path}-wal")) > limit:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.warning("%s: checkpoint failed (will retry): %s", name, exc)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def checkpoint_file(path: Path, name: str) -> None:
    """`checkpoint` on a connection of its own (for a worker thread)."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    except sqlite3.Error as exc:
        log.warning("%s: checkpoint failed (will retry): %s", name, exc)
        return
    try:
        checkpoint(db, path, name)
    finally:
        db.close()
