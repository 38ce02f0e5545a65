"""The SQLite response store (`[responses] store_path`): what goes in comes out until it
expires, concurrent puts are all written (in batches), and clearing expired rows uses an index
rather than reading the whole table on every put (benchmarks/README.md, "Paths")."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from thanos_asgi.governance.response_store import (
    _SWEEP,
    ON_LOOP,
    SWEEP,
    SWEEP_EVERY,
    SQLiteStore,
)

pytestmark = pytest.mark.anyio


async def test_entries_come_back_until_deleted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "responses.db", ttl=60)
    await store.put("resp_1", b"one")
    await store.put("resp_1", b"again")  # replaced, not added
    assert await store.get("resp_1") == b"again"
    assert await store.get("resp_missing") is None
    assert await store.delete("resp_1") is True
    assert await store.delete("resp_1") is False
    assert await store.get("resp_1") is None
    store.close()


async def test_concurrent_puts_are_all_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "responses.db", ttl=60)
    await asyncio.gather(*(store.put(f"resp_{n}", b"%d" % n) for n in range(500)))
    found = await asyncio.gather(*(store.get(f"resp_{n}") for n in range(500)))
    assert found == [b"%d" % n for n in range(500)]
    store.close()
    reopened = SQLiteStore(tmp_path / "responses.db", ttl=60)  # they were committed
    assert await reopened.get("resp_499") == b"499"
    reopened.close()


async def test_expired_rows_are_cleared_through_an_index(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    store = SQLiteStore(path, ttl=0.05)
    await asyncio.gather(*(store.put(f"old_{n}", b"x") for n in range(SWEEP_EVERY * 3)))
    await asyncio.sleep(0.1)
    assert await store.get("old_0") is None  # expired, whether or not cleared yet
    await store.put("new", b"y")  # the next sweeping put: clears the expired ones
    store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT id FROM responses").fetchall() == [("new",)]
        plan = db.execute("EXPLAIN QUERY PLAN " + _SWEEP, (time.time(), SWEEP)).fetchall()
    finally:
        db.close()
    assert any("INDEX responses_expires" in str(row[-1]) for row in plan), plan
    assert not any("SCAN" in str(row[-1]) for row in plan), plan


async def test_a_store_from_before_the_index_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    db = sqlite3.connect(path)
    db.execute(SQLiteStore._SCHEMA)
    db.execute("INSERT INTO responses VALUES ('resp_old', ?, x'6f6c64')", (time.time() + 60,))
    db.commit()
    db.close()
    store = SQLiteStore(path, ttl=60)
    assert await store.get("resp_old") == b"old"
    store.close()
    db = sqlite3.connect(path)
    names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    db.close()
    assert "responses_expires" in names


def test_the_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Stored responses are users' conversations: 0600, like the usage ledger."""
    store = SQLiteStore(tmp_path / "responses.db", ttl=60)
    store.close()
    assert (tmp_path / "responses.db").stat().st_mode & 0o777 == 0o600


async def test_a_put_while_another_process_writes_waits_aside_not_on_the_loop(
    tmp_path: Path,
) -> None:
    """Another writer (a `--workers` sibling) holding SQLite's lock: the put waits for it in a
    thread, the event loop keeps running, and the entry is there once the lock is free."""
    path = tmp_path / "responses.db"
    store = SQLiteStore(path, ttl=60)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, held
    put = asyncio.create_task(store.put("resp_1", b"one"))
    more = [asyncio.create_task(store.put(f"resp_1{n}", b"x")) for n in range(3)]
    await asyncio.sleep(0)
    also = asyncio.gather(*more)  # (a turn later: a batch of their own, behind the first)
    ticks = 0
    started = time.monotonic()
    while time.monotonic() - started < 0.3:  # the loop turns while the put waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert not put.done() and not also.done() and ticks >= 10
    other.execute("COMMIT")
    await asyncio.wait_for(put, 5)
    await asyncio.wait_for(also, 5)
    assert await store.get("resp_1") == b"one"
    assert await store.get("resp_12") == b"x"
    await store.put("resp_2", b"two")  # the lock free again: back on the loop's connection
    assert await store.get("resp_2") == b"two"
    other.close()
    store.close()


async def test_puts_go_back_on_the_loop_while_a_put_still_waits_in_a_thread(
    tmp_path: Path,
) -> None:
    """A put that met the lock (a checkpoint, a sibling's write) waits in a thread, in SQLite's
    busy handler, which sleeps up to 100 ms at a time. A put that comes once the lock is free
    goes in at once on the loop's connection: it does not queue behind the waiting one (under
    load, every later put did, and the store's throughput halved)."""
    path = tmp_path / "responses.db"
    store = SQLiteStore(path, ttl=60)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waiting = asyncio.create_task(store.put("resp_1", b"one"))
    # the busy handler tries again at 328 ms, then every 100 ms: free the lock just after
    await asyncio.sleep(0.34)
    other.execute("COMMIT")
    await store.put("resp_2", b"two")  # no await in between: the thread's put cannot end first
    assert not waiting.done()
    await asyncio.wait_for(waiting, 5)
    assert await store.get("resp_1") == b"one" and await store.get("resp_2") == b"two"
    other.close()
    store.close()


async def test_the_puts_of_one_turn_share_a_commit(tmp_path: Path) -> None:
    """Of puts made together, the first goes in at once and the rest in one transaction at the
    turn's end; each returns once it is committed. A lone put that does not sweep is a single
    INSERT, no transaction of its own."""
    store = SQLiteStore(tmp_path / "responses.db", ttl=60)
    await store.put("first", b"sweeps")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    await asyncio.gather(*(store.put(f"resp_{n}", b"%d" % n) for n in range(10)))
    assert [s.split(" ")[0] for s in statements] == ["INSERT", "BEGIN", *["INSERT"] * 9, "COMMIT"]
    other = sqlite3.connect(tmp_path / "responses.db")  # committed: another reader sees them
    assert other.execute("SELECT count(*) FROM responses").fetchone() == (11,)
    other.close()
    statements.clear()
    await store.put("alone", b"y")
    assert [s.split(" ")[0] for s in statements] == ["INSERT"]
    store.close()


async def test_checkpoints_run_aside_not_inside_a_put(tmp_path: Path) -> None:
    from thanos_asgi.governance._sqlite import CHECKPOINT_EVERY

    path = tmp_path / "responses.db"
    store = SQLiteStore(path, ttl=60)
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    before = path.stat().st_size
    for n in range(300):  # ~1,000 WAL pages and more: where SQLite would checkpoint in a commit
        await store.put(f"resp_{n}", b"x" * 4000)
    assert path.stat().st_size == before  # still only in the WAL
    await asyncio.sleep(CHECKPOINT_EVERY)
    await store.put("resp_last", b"y")  # a put a second later: a checkpoint in a worker thread
    assert store._checkpoint is not None
    await asyncio.wait_for(store._checkpoint, 5)
    assert path.stat().st_size > before  # the checkpoint moved them
    store.close()


async def test_puts_clear_a_bounded_number_of_expired_rows(tmp_path: Path) -> None:
    """A store idle past its retention is cleared a little at a time (puts may run on the
    event loop), not all at once: one put in SWEEP_EVERY deletes up to SWEEP expired rows,
    the others only insert. More goes out than comes in, so it empties."""
    path = tmp_path / "responses.db"
    store = SQLiteStore(path, ttl=0.05)
    old = SWEEP * 2 + SWEEP_EVERY
    for n in range(old):
        await store.put(f"old_{n}", b"x")
    await asyncio.sleep(0.1)
    store.ttl = 60
    count = "SELECT count(*) FROM responses"
    puts = 0
    while store._puts % SWEEP_EVERY:  # up to the next sweeping put: inserts only
        puts += 1
        await store.put(f"new_{puts}", b"y")
        assert store._db.execute(count).fetchone() == (old + puts,)
    await store.put("sweeps", b"y")
    assert store._db.execute(count).fetchone() == (old + puts + 1 - SWEEP,)
    for n in range(2 * SWEEP_EVERY):
        await store.put(f"later_{n}", b"y")
    assert store._db.execute(count).fetchone() == (puts + 1 + 2 * SWEEP_EVERY,)
    store.close()


async def test_a_large_entry_is_written_and_read_in_a_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "responses.db", ttl=60)
    big = b"z" * (ON_LOOP * 16)  # a long conversation
    await store.put("resp_big", big)
    await store.put("resp_small", b"s")
    assert await store.get("resp_big") == big
    assert await store.get("resp_small") == b"s"
    store.close()


def test_a_checkpoint_empties_a_wal_grown_past_its_limit(tmp_path: Path) -> None:
    """Writes that never pause keep every passive checkpoint from finishing, so the WAL never
    starts over and its file grows without end. Past the limit, a checkpoint empties it;
    below, it only copies (a passive checkpoint leaves the file as long as it was)."""
    from thanos_asgi.governance._sqlite import checkpoint

    path = tmp_path / "responses.db"
    store = SQLiteStore(path, ttl=60)
    wal = Path(f"{path}-wal")
    for n in range(100):
        store._db.execute("INSERT INTO responses VALUES (?, ?, ?)", (f"r{n}", 1e12, b"x" * 4000))
    grown = wal.stat().st_size
    assert grown > 400_000
    db = sqlite3.connect(path, isolation_level=None)
    checkpoint(db, path, "test", limit=grown)  # not past the limit: copied, not emptied
    assert wal.stat().st_size == grown
    store._db.execute("INSERT INTO responses VALUES ('more', 1e12, x'00')")  # starts it over
    assert wal.stat().st_size == grown
    for n in range(100, 200):
        store._db.execute("INSERT INTO responses VALUES (?, ?, ?)", (f"r{n}", 1e12, b"x" * 4000))
    checkpoint(db, path, "test", limit=grown // 2)
    assert wal.stat().st_size == 0
    assert db.execute("SELECT count(*) FROM responses").fetchone() == (201,)
    db.close()
    store.close()
