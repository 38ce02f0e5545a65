"""The usage ledger: reports, CSV, WAL, durability across kill -9, concurrent writers."""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thanos_asgi.governance.ledger import COLUMNS, Ledger, LedgerRow

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "usage.db") as opened:
        yield opened


def row(ts: float, **fields: object) -> LedgerRow:
    values: dict[str, object] = {
        "ts": ts,
        "request_id": f"req-{ts}",
        "key_id": "alice",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cached_tokens": 40,
        "reasoning_tokens": 2,
        "cost_usd": 0.5,
        "status": "ok",
        "latency_ms": 12.5,
    }
    values.update(fields)
    return LedgerRow(**values)  # type: ignore[arg-type]


ROWS = [
    row(T0 + 10),
    row(T0 + 20, key_id="bob", provider="anthropic", model="claude-sonnet-4-5", cost_usd=1.25),
    row(T0 + DAY + 5, model="gpt-4o", cost_usd=None, status="error:502"),
    row(T0 + DAY + 6, key_id=None, provider="ollama", model="llama3:8b", cost_usd=0.0),
]


def fill(ledger: Ledger) -> None:
    for item in ROWS:
        ledger.record(item)


def test_rows_come_back_as_recorded(ledger: Ledger) -> None:
    fill(ledger)
    assert list(ledger.rows()) == ROWS
    assert list(ledger.rows(since=T0 + DAY)) == ROWS[2:]


def test_report_by_day(ledger: Ledger) -> None:
    fill(ledger)
    first, second = ledger.report(group_by="day")
    assert first == {
        "day": "2026-01-01",
        "requests": 2,
        "prompt_tokens": 200,
        "completion_tokens": 20,
        "cached_tokens": 80,
        "reasoning_tokens": 4,
        "cost_usd": pytest.approx(1.75),
        "unpriced_requests": 0,
    }
    assert second["day"] == "2026-01-02"
    assert (second["requests"], second["cost_usd"], second["unpriced_requests"]) == (2, 0.0, 1)


def test_report_by_provider_model_and_key(ledger: Ledger) -> None:
    fill(ledger)
    by_provider = {r["provider"]: r for r in ledger.report(group_by="provider")}
    assert set(by_provider) == {"anthropic", "ollama", "openai"}
    assert by_provider["openai"]["requests"] == 2
    assert by_provider["openai"]["cost_usd"] == pytest.approx(0.5)
    assert by_provider["openai"]["unpriced_requests"] == 1
    by_model = {r["model"]: r["requests"] for r in ledger.report(group_by="model")}
    assert by_model == {"claude-sonnet-4-5": 1, "gpt-4o": 1, "gpt-4o-mini": 1, "llama3:8b": 1}
    by_key = {r["key_id"]: r["cost_usd"] for r in ledger.report(group_by="key")}
    assert by_key == {None: 0.0, "alice": pytest.approx(0.5), "bob": pytest.approx(1.25)}


def test_report_window_and_total_cost(ledger: Ledger) -> None:
    fill(ledger)
    window = ledger.report(group_by="provider", since=T0 + 15, until=T0 + DAY)
    assert [r["provider"] for r in window] == ["anthropic"]
    assert ledger.report(group_by="day", since=T0 + 10 * DAY) == []
    assert ledger.total_cost(T0) == pytest.approx(1.75)
    assert ledger.total_cost(T0 + 15) == pytest.approx(1.25)
    assert ledger.total_cost(T0, until=T0 + 15) == pytest.approx(0.5)


def test_csv(ledger: Ledger) -> None:
    fill(ledger)
    out = io.StringIO()
    assert ledger.to_csv(out) == len(ROWS)
    header, *lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert header == list(COLUMNS)
    assert len(lines) == len(ROWS)
    unpriced = dict(zip(header, lines[2], strict=True))
    assert unpriced["cost_usd"] == "" and unpriced["status"] == "error:502"
    assert float(dict(zip(header, lines[1], strict=True))["cost_usd"]) == 1.25
    assert [line[0] for line in lines[:3]] == [  # ISO 8601 in UTC, not unix seconds
        "2026-01-01T00:00:10.000+00:00",
        "2026-01-01T00:00:20.000+00:00",
        "2026-01-02T00:00:05.000+00:00",
    ]
    later = io.StringIO()
    assert ledger.to_csv(later, since=T0 + DAY) == 2


def test_csv_costs_are_plain_decimals(ledger: Ledger) -> None:
    ledger.record(row(T0, cost_usd=0.0000264))
    out = io.StringIO()
    ledger.to_csv(out)
    line = dict(zip(COLUMNS, list(csv.reader(io.StringIO(out.getvalue())))[1], strict=True))
    assert line["cost_usd"] == "0.0000264"


def test_wal_mode_and_synchronous_normal(ledger: Ledger) -> None:
    ledger.record(ROWS[0])
    other = sqlite3.connect(ledger.path)
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    assert ledger._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_only_the_accounting_columns_exist(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    columns = [name for _, name, *_ in db.execute("PRAGMA table_info(requests)")]
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert columns == [
        "id",
        "ts",
        "request_id",
        "key_id",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cost_usd",
        "status",
        "latency_ms",
        "credential",
        "cached",
    ]
    assert {"requests_ts", "requests_key_id"} <= indexes


def test_an_older_ledger_and_journal_gain_the_new_columns(tmp_path: Path) -> None:
    import msgspec

    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as db:  # the table as the first release wrote it, one row in it
        db.execute(
            "CREATE TABLE requests (id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT,"
            " key_id TEXT, provider TEXT, model TEXT, prompt_tokens INT, completion_tokens INT,"
            " cached_tokens INT, reasoning_tokens INT, cost_usd REAL NULL, status TEXT,"
            " latency_ms REAL)"
        )
        db.execute("INSERT INTO requests (ts, request_id) VALUES (?, 'old')", (T0,))
    directory = Path(f"{path}.journals")
    directory.mkdir()
    old = msgspec.structs.astuple(row(T0 + 1, request_id="journal"))[:-2]  # no new columns
    (directory / "1-dead.rows").write_bytes(msgspec.json.encode(old) + b"\n")
    with Ledger(path) as ledger:
        ledger.record(row(T0 + 2, request_id="new", credential="team-a", cached=True))
        found = {r.request_id: (r.credential, r.cached) for r in ledger.rows()}
    assert found == {"old": (None, False), "journal": (None, False), "new": ("team-a", True)}


def test_private_directories_and_file(tmp_path: Path) -> None:
    path = tmp_path / "share" / "thanos" / "usage.db"
    Ledger(path).close()
    for directory in (tmp_path / "share", tmp_path / "share" / "thanos"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Ledger(path) as again:  # reopening an existing ledger is fine
        assert list(again.rows()) == []


WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from thanos_asgi.governance.ledger import Ledger, LedgerRow

    path, name, count, start, kill = sys.argv[1:6]
    ledger = Ledger(path)
    while time.time() < float(start):
        pass
    for i in range(int(count)):
        ledger.record(LedgerRow(ts=time.time(), request_id=f"{name}-{i}", key_id=name,
                                provider="openai", model="gpt-4o-mini", cost_usd=0.001))
    if kill == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    ledger.close()
    """
)


def writer(
    path: Path, name: str, count: int, *, start: float = 0.0, kill: bool = False
) -> list[str]:
    args = [str(path), name, str(count), str(start), "kill" if kill else "close"]
    return [sys.executable, "-c", WRITER, *args]


def test_rows_survive_kill_9_right_after_recording(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    done = subprocess.run(writer(path, "killed", 200, kill=True), capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert Path(f"{path}-wal").stat().st_size > 0  # the rows were still only in the WAL
    with Ledger(path) as ledger:
        ids = [r.request_id for r in ledger.rows()]
    assert ids == [f"killed-{i}" for i in range(200)]


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    start = time.time() + 1.0  # both begin inserting at the same moment
    procs = [subprocess.Popen(writer(path, name, 500, start=start)) for name in ("a", "b")]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0]
    with Ledger(path) as ledger:
        ids = {r.request_id for r in ledger.rows()}
        by_key = {r["key_id"]: r["requests"] for r in ledger.report(group_by="key")}
    assert len(ids) == 1000
    assert by_key == {"a": 500, "b": 500}


def test_durable_record_is_cheap(ledger: Ledger) -> None:
    started = time.perf_counter()
    for i in range(500):
        ledger.record(row(T0 + i))
    per_row = (time.perf_counter() - started) / 500
    assert per_row < 0.005, f"{per_row * 1e6:.0f} µs per row"
    assert os.path.getsize(f"{ledger.path}-wal") > 0


def count(path: Path) -> int:
    """Rows in the database file, as another connection (not the ledger) sees them."""
    with sqlite3.connect(path) as other:
        return int(other.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


def journals(path: Path) -> list[Path]:
    return sorted(Path(f"{path}.journals").glob("*.rows"))


@pytest.mark.anyio
async def test_queued_rows_are_journaled_at_once_and_imported_together(tmp_path: Path) -> None:
    import asyncio

    from thanos_asgi.governance.ledger import LATER

    path = tmp_path / "usage.db"
    with Ledger(path) as ledger:
        for i in range(50):
            ledger.queue(row(T0 + i))
        (journal,) = journals(path)
        assert len(journal.read_bytes().splitlines()) == 50  # durable: one line each
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        assert count(path) == 0  # not imported yet: waiting for company
        await asyncio.sleep(LATER)
        for _ in range(200):  # imported in one go, shortly after
            if count(path) == 50:
                break
            await asyncio.sleep(0.01)
        assert count(path) == 50
        ledger.queue(row(T0 + 99))
        assert len(list(ledger.rows())) == 51  # a reader imports what is queued first
    assert count(path) == 51
    assert journals(path) == []  # a clean close leaves no journal behind


@pytest.mark.anyio
async def test_the_import_runs_aside_while_the_event_loop_is_busy(tmp_path: Path) -> None:
    import time

    from thanos_asgi.governance.ledger import LATER

    path = tmp_path / "usage.db"
    with Ledger(path) as ledger:
        for i in range(20):
            ledger.queue(row(T0 + i))
        deadline = time.monotonic() + LATER + 5
        while count(path) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 (on purpose: the loop never runs meanwhile)
        assert count(path) == 20


@pytest.mark.anyio
async def test_a_refused_import_is_logged_kept_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as ledger:
        ledger.record(row(T0))
        with sqlite3.connect(path) as other:
            other.execute("ALTER TABLE requests RENAME TO moved")
        ledger.queue(row(T0 + 1))
        assert ledger.flush() is False
        assert "1 rows not recorded yet" in caplog.text
        assert not ledger._db.in_transaction
        with sqlite3.connect(path) as other:
            other.execute("ALTER TABLE moved RENAME TO requests")
        ledger.queue(row(T0 + 2))
        assert ledger.flush() is True  # the refused row went in with the next one
        assert [r.ts for r in ledger.rows()] == [T0, T0 + 1, T0 + 2]


QUEUER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from thanos_asgi.governance.ledger import Ledger, LedgerRow

    async def main(path, count):
        ledger = Ledger(path)
        for i in range(count):
            ledger.queue(LedgerRow(ts=1.0 + i, request_id=f"q-{i}", key_id=None,
                                   provider="openai", model="m", cost_usd=0.001))
        print("queued", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before the import's timer fires

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


STEADY_QUEUER = textwrap.dedent(
    """
    import asyncio, os, random, signal, sys, time
    from thanos_asgi.governance.ledger import Ledger, LedgerRow

    async def main(path, seconds, seed):
        ledger = Ledger(path)
        stop = time.monotonic() + seconds * random.Random(seed).uniform(0.5, 1.0)
        queued = 0
        while time.monotonic() < stop:  # imports run aside all along, the kill hits one or not
            ledger.queue(LedgerRow(ts=1.0 + queued, request_id=f"q-{queued}", key_id=None,
                                   provider="openai", model="m", cost_usd=0.001))
            queued += 1
            if queued % 20 == 0:
                await asyncio.sleep(0.001)
        print(queued, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
    """
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_are_imported_exactly_once_when_kill_9_lands_among_imports(
    tmp_path: Path, seed: int
) -> None:
    from thanos_asgi.governance.ledger import LATER

    path = tmp_path / "usage.db"
    cmd = [sys.executable, "-c", STEADY_QUEUER, str(path), str(LATER * 6), str(seed)]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    queued = int(done.stdout)
    assert 0 < count(path) <= queued  # some were imported before the kill
    with Ledger(path) as ledger:  # the rest come from the dead process's journal
        ids = [r.request_id for r in ledger.rows()]
    assert ids == [f"q-{i}" for i in range(queued)]


def test_queued_rows_survive_kill_9_before_their_import(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    cmd = [sys.executable, "-c", QUEUER, str(path), "300"]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert done.stdout == b"queued\n"
    assert count(path) == 0 and len(journals(path)) == 1  # only in the dead process's journal
    with Ledger(path) as ledger:  # whoever opens the ledger next imports it
        assert [r.request_id for r in ledger.rows()] == [f"q-{i}" for i in range(300)]
    assert journals(path) == []
    with Ledger(path) as again:  # exactly once
        assert len(list(again.rows())) == 300


@pytest.mark.anyio
async def test_a_live_writers_journal_is_left_to_it(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    writer = Ledger(path)
    writer.queue(row(T0))
    with Ledger(path) as reader:  # the writer holds its journal's lock: not a dead one's
        assert list(reader.rows()) == []
        assert len(journals(path)) == 1
        writer.close()
        assert [r.ts for r in reader.rows()] == [T0]


def test_recovery_skips_a_torn_last_line_and_garbage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import msgspec

    path = tmp_path / "usage.db"
    Ledger(path).close()
    directory = Path(f"{path}.journals")
    directory.mkdir()
    lines = [msgspec.json.encode(msgspec.structs.astuple(row(T0 + i))) for i in range(2)]
    torn = msgspec.json.encode(msgspec.structs.astuple(row(T0 + 9)))[:-7]
    (directory / "1-dead.rows").write_bytes(
        lines[0] + b"\n[1,2]\nnot json\n" + lines[1] + b"\n" + torn
    )
    with Ledger(path) as ledger:
        assert [r.ts for r in ledger.rows()] == [T0, T0 + 1]
    assert caplog.text.count("unreadable row") == 2
    assert journals(path) == []


def test_a_journal_imported_before_a_crash_is_not_imported_twice(tmp_path: Path) -> None:
    import msgspec

    path = tmp_path / "usage.db"
    Ledger(path).close()
    directory = Path(f"{path}.journals")
    directory.mkdir()
    data = b"".join(
        msgspec.json.encode(msgspec.structs.astuple(row(T0 + i))) + b"\n" for i in range(3)
    )
    (directory / "1-dead.rows").write_bytes(data)
    with sqlite3.connect(path) as db:  # as if the crash came after the import, before unlink
        db.executemany(
            "INSERT INTO requests (ts, request_id) VALUES (?, ?)", [(T0 + i, "x") for i in range(2)]
        )
        db.execute("INSERT INTO journal VALUES ('1-dead.rows', ?)", (data.index(b"\n") * 2 + 2,))
        db.execute("INSERT INTO journal VALUES ('2-gone.rows', 5)")  # a file already deleted
    with Ledger(path) as ledger:
        assert [r.ts for r in ledger.rows()] == [T0, T0 + 1, T0 + 2]  # only the third imported
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM journal").fetchone() == (0,)


@pytest.mark.anyio
async def test_a_large_imported_journal_is_replaced_by_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thanos_asgi.governance import journal as _journal

    monkeypatch.setattr(_journal, "ROTATE_AT", 500)
    path = tmp_path / "usage.db"
    with Ledger(path) as ledger:
        for i in range(10):
            ledger.queue(row(T0 + i))
        (first,) = journals(path)
        assert first.stat().st_size > 500
        ledger.flush()
        (second,) = journals(path)
        assert second != first and second.stat().st_size == 0
        ledger.queue(row(T0 + 10))
        assert len(list(ledger.rows())) == 11
    with Ledger(path) as again:
        assert len(list(again.rows())) == 11


def test_checkpoints_run_aside_not_inside_a_commit(tmp_path: Path) -> None:
    from thanos_asgi.governance._sqlite import CHECKPOINT_EVERY

    path = tmp_path / "usage.db"
    with Ledger(path) as ledger:
        assert ledger._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        before = path.stat().st_size
        for i in range(300):  # ~1,000 WAL pages: where SQLite would checkpoint in a commit
            ledger.record(row(T0 + i))
        assert path.stat().st_size == before  # every row is still only in the WAL
        deadline = time.monotonic() + CHECKPOINT_EVERY * 5
        while path.stat().st_size == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > before  # the checkpoint thread moved them
    with Ledger(path) as again:
        assert len(list(again.rows())) == 300
