"""A process's journal of usage-ledger rows: what makes a row durable before its answer goes out.

Each `Ledger` that writes from an event loop owns one file in `<ledger>.journals/` (not
`-journal`, SQLite's own name for a rollback journal), opened with O_APPEND and held under an
exclusive `flock` while it is open. A row is one line of JSON
appended with a single write(2): once that returns, the bytes are in the OS page cache, so a
kill -9 or an OOM kill right after loses nothing (the guarantee SQLite's WAL gives with
`synchronous=NORMAL`, at one syscall instead of ~16).

The ledger imports the rows into SQLite in batches and, in the same transaction, stores how far
into the file it has imported (table `journal`): a row is imported exactly once, whatever
crashes when. Whoever opens the ledger imports what dead processes left behind (a file whose
lock is free), then deletes those files. A live process's file is never touched by another.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("thanos_asgi")

SUFFIX = ".rows"
ROTATE_AT = 8 << 20  # bytes: a file fully imported and this large is replaced by a new one
TABLE = "CREATE TABLE IF NOT EXISTS journal (name TEXT PRIMARY KEY, offset INTEGER NOT NULL)"
_OFFSET = "INSERT OR REPLACE INTO journal (name, offset) VALUES (?, ?)"
_decode_row = msgspec.json.Decoder(tuple[Any, ...]).decode
encode_row = msgspec.json.Encoder().encode


class Journal:
    """The file this process appends rows to. `size` is its length, i.e. the offset up to
    which the rows are imported once every row appended so far is committed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd, self.name = _create(directory)
        self.size = 0

    def append(self, line: bytes) -> None:
        """Append one row's line (ending in a newline) with one write; OSError if it fails."""
        written = os.write(self.fd, line)
        if written != len(line):  # a regular file writes short only when the disk is full
            os.ftruncate(self.fd, self.size)  # keep the file whole lines only
            raise OSError(f"short write to the usage journal ({written} of {len(line)} bytes)")
        self.size += written

    def imported(self, db: sqlite3.Connection, offset: int) -> None:
        """Inside the transaction that committed every row appended before `offset` (the
        `size` read together with those rows): note that."""
        db.execute(_OFFSET, (self.name, offset))

    def renew(self, db: sqlite3.Connection | None) -> None:
        """After `imported` was committed: go on in a new file and delete this one."""
        fd, name = self.fd, self.name
        self.fd, self.name = _create(self.directory)
        self.size = 0
        remove(db, self.directory / name, fd)

    def close(self, db: sqlite3.Connection | None, *, imported: bool) -> None:
        """Delete the file when every row in it is imported, else leave it for recovery."""
        if imported:
            remove(db, self.directory / self.name, self.fd)
        else:
            os.close(self.fd)


def _create(directory: Path) -> tuple[int, str]:
    # Locked before it gets its name, so no other process takes it for a dead one's. Another
    # process's recovery may delete the nameless file in the instant before it is locked:
    # then a fresh name is tried.
    for attempt in range(3):
        name = f"{os.getpid()}-{os.urandom(6).hex()}{SUFFIX}"
        temp = directory / f"{name}.new"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temp, directory / name)
        except OSError:
            os.close(fd)
            if attempt == 2:
                raise
            continue
        return fd, name
    raise AssertionError("unreachable")


def remove(db: sqlite3.Connection | None, path: Path, fd: int) -> None:
    """Delete a journal file (and its offset row in `db`, if given), then close `fd`."""
    # Unlinked while still locked: whoever waits for the lock then finds no file to import
    try:
        path.unlink(missing_ok=True)
        if db is not None:
            db.execute("DELETE FROM journal WHERE name = ?", (path.name,))
    except (OSError, sqlite3.Error) as exc:  # a stale offset row is dropped at the next open
        log.warning("usage journal: %s not cleaned up: %s", path.name, exc)
    finally:
        os.close(fd)


def recover(db: sqlite3.Connection, directory: Path, insert: str, width: int) -> int:
    """Import the rows of every journal in `directory` whose process is gone, delete those
    files, and return how many rows were imported. `insert` takes one row of `width` values."""
    imported = 0
    for path, fd in dead(directory):
        try:
            if path.suffix == SUFFIX:
                imported += _import(db, path.name, fd, insert, width)
        except (OSError, sqlite3.Error) as exc:
            log.error("usage journal: %s not recovered (kept for later): %s", path.name, exc)
            os.close(fd)
            continue
        remove(db, path, fd)  # or an empty `.new` left between create and rename
    _forget_missing(db, directory)
    return imported


def dead(directory: Path) -> Iterator[tuple[Path, int]]:
    """Each journal file in `directory` whose process is gone, with a descriptor holding its
    lock: the caller imports it, then `remove`s it (or closes the descriptor to keep it)."""
    for path in sorted(directory.glob(f"*{SUFFIX}*")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # another process recovered it meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its process is alive and still writing
            os.close(fd)
            continue
        if not _same_file(path, fd):  # recovered and deleted before we got the lock
            os.close(fd)
            continue
        yield path, fd


def lines(fd: int, start: int = 0) -> Iterator[tuple[int, tuple[Any, ...] | None]]:
    """(offset, values) of each whole line of the file from `start` on; values None when the
    line is unreadable. A last line without its newline was never acknowledged: left out."""
    data = os.pread(fd, max(os.fstat(fd).st_size - start, 0), start)
    end = data.rfind(b"\n") + 1
    offset = start
    for line in data[:end].splitlines(keepends=True):
        try:
            values: tuple[Any, ...] | None = _decode_row(line)
        except msgspec.DecodeError:
            values = None
        yield offset, values
        offset += len(line)


def _same_file(path: Path, fd: int) -> bool:
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _import(db: sqlite3.Connection, name: str, fd: int, insert: str, width: int) -> int:
    found = db.execute("SELECT offset FROM journal WHERE name = ?", (name,)).fetchone()
    start = found[0] if found else 0
    data = os.pread(fd, max(os.fstat(fd).st_size - start, 0), start)
    end = data.rfind(b"\n") + 1  # a last line without its newline was never acknowledged
    rows = []
    for line in data[:end].splitlines():
        try:
            values = _decode_row(line)
        except msgspec.DecodeError:
            values = ()
        if 0 < len(values) < width:  # written by a version whose rows had fewer columns
            values = padded(values, width)
        if len(values) != width:
            log.error("usage journal: an unreadable row in %s was skipped", name)
            continue
        rows.append(values)
    db.execute("BEGIN")
    try:
        db.executemany(insert, rows)
        db.execute(_OFFSET, (name, start + end))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if rows:
        log.warning("usage journal: %d rows recovered from %s", len(rows), name)
    return len(rows)


# The defaults of the columns added since the first release (ledger.py `_ADDED_COLUMNS`), in
# order: a row from an older journal is padded with them.
_ADDED_DEFAULTS: tuple[Any, ...] = (None, False)


def padded(values: tuple[Any, ...], width: int) -> tuple[Any, ...]:
    missing = width - len(values)
    if missing > len(_ADDED_DEFAULTS):
        return values  # too short to be an older row: skipped as unreadable
    return values + _ADDED_DEFAULTS[len(_ADDED_DEFAULTS) - missing :]


def _forget_missing(db: sqlite3.Connection, directory: Path) -> None:
    names = [name for (name,) in db.execute("SELECT name FROM journal")]
    gone = [(name,) for name in names if not (directory / name).exists()]
    if gone:
        db.executemany("DELETE FROM journal WHERE name = ?", gone)
