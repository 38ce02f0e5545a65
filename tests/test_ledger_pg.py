"""The PostgreSQL ledger against a real server: the SQLite ledger's answers, journal recovery
without loss or double import, migrations applied once by concurrent starters, retention on
both backends, hostile values, and a password that never reaches a log or an error."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.postgres import pg_url, with_database
from tests.test_ledger import DAY, ROWS, T0, row
from thanos_asgi.config.load import parse_config
from thanos_asgi.governance.ledger import Ledger
from thanos_asgi.governance.ledger_pg import PgLedger
from thanos_asgi.governance.ledger_pg_schema import MIGRATIONS, migrate
from thanos_asgi.governance.ledgers import LedgerUnavailable, open_ledger

__all__ = ["pg_url"]  # the fixture

PASSWORD = "pg-secret-password-0123456789"


def count(url: str) -> int:
    with psycopg.connect(url) as db:
        found = db.execute("SELECT COUNT(*) FROM thanos_ledger").fetchone()
    assert found is not None
    return int(found[0])


def test_answers_match_the_sqlite_ledger(pg_url: str, tmp_path: Path) -> None:
    with Ledger(tmp_path / "usage.db") as lite, PgLedger(pg_url) as pg:
        for item in ROWS:
            lite.record(item)
            pg.record(item)
        for group_by in ("day", "provider", "model", "key"):
            assert pg.report(group_by=group_by) == lite.report(group_by=group_by)  # type: ignore[arg-type]
        assert pg.report(group_by="day", since=T0 + DAY) == lite.report(
            group_by="day", since=T0 + DAY
        )
        assert list(pg.rows()) == list(lite.rows()) == ROWS
        assert pg.total_cost(T0, T0 + DAY) == lite.total_cost(T0, T0 + DAY) == 1.75
        assert pg.spend(T0) == lite.spend(T0)
        pg_csv, lite_csv = io.StringIO(), io.StringIO()
        assert pg.to_csv(pg_csv) == lite.to_csv(lite_csv) == 4
        assert pg_csv.getvalue() == lite_csv.getvalue()


def test_queued_rows_reach_the_table_from_the_import_thread(pg_url: str, tmp_path: Path) -> None:
    journals = tmp_path / "usage.db.pg-journals"
    with PgLedger(pg_url, journals=journals) as pg:
        for i in range(50):
            pg.queue(row(T0 + i, request_id=f"q-{i}"))
        assert len(list(journals.glob("*.rows"))) == 1  # durable before the import
        for _ in range(200):
            if count(pg_url) == 50:
                break
            time.sleep(0.01)
        assert count(pg_url) == 50  # imported without a flush from the caller
    assert not list(journals.iterdir())  # all imported: the journal is gone on close


KILLED = """
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.test_ledger import row
from thanos_asgi.governance.ledger_pg import PgLedger
pg = PgLedger({url!r}, journals=Path({journals!r}))
for i in range(2000):
    pg.queue(row(1767225600.0 + i, request_id=f"k-{{i}}"))
    if i == 1000:
        pg.flush()  # half of them in the table before the crash, the rest maybe not
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_journal_is_imported_once_by_the_next(pg_url: str, tmp_path: Path) -> None:
    journals = tmp_path / "journals"
    script = KILLED.format(root=str(Path.cwd()), url=pg_url, journals=str(journals))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False)
    assert done.returncode == -signal.SIGKILL
    before = count(pg_url)
    print(f"killed after 2000 queued rows: {before} in the table, the rest in its journal")
    assert 1001 <= before <= 2000
    with PgLedger(pg_url, journals=journals) as pg:
        assert count(pg_url) == 2000  # every row, none twice (the key is file and offset)
        assert len({r.request_id for r in pg.rows()}) == 2000
    assert not list(journals.glob("*.rows"))
    with PgLedger(pg_url, journals=journals):  # nothing left to import
        assert count(pg_url) == 2000


def test_migrations_run_once_when_two_replicas_start_together(pg_url: str) -> None:
    applied: list[int] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        with psycopg.connect(pg_url, autocommit=True) as db:
            barrier.wait()
            applied.append(migrate(db))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(applied) == [0, 0, 0, len(MIGRATIONS)]
    with psycopg.connect(pg_url) as db:
        versions = db.execute("SELECT version FROM thanos_migrations ORDER BY version").fetchall()
    assert [v for (v,) in versions] == [m[0] for m in MIGRATIONS]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_retention_deletes_old_rows_on_both_backends(
    backend: str, pg_url: str, tmp_path: Path
) -> None:
    now = time.time()
    text = "[ledger]\nretention_days = 30\n"
    if backend == "postgresql":
        text += f'url = "{pg_url}"\n'
    text += f'[cost]\nledger_path = "{tmp_path / "usage.db"}"\n'
    config = parse_config(text, source="test", env={})
    keep = msgspec_replace(config)
    with open_ledger(keep) as first:  # type: ignore[union-attr]
        for age in (400, 31, 29, 1):
            first.record(row(now - age * DAY, request_id=f"age-{age}"))
    with open_ledger(config) as opened:  # type: ignore[union-attr]
        assert [r.request_id for r in opened.rows()] == ["age-29", "age-1"]
        assert opened.purge(now) == 2


def msgspec_replace(config: object) -> object:
    """The same config without retention."""
    import msgspec

    return msgspec.structs.replace(
        config,  # type: ignore[type-var]
        ledger=msgspec.structs.replace(config.ledger, retention_days=None),  # type: ignore[attr-defined]
    )


def test_hostile_values_never_block_the_import(pg_url: str, tmp_path: Path) -> None:
    with PgLedger(pg_url, journals=tmp_path / "j") as pg:
        pg.queue(row(T0, request_id="nul", model="gpt\x00evil"))
        pg.queue(row(T0 + 1, request_id="huge", prompt_tokens=2**70))
        pg.queue(row(T0 + 2, request_id="fine"))
        assert pg.flush()
        found = {r.request_id: r for r in pg.rows()}
    assert set(found) == {"nul", "fine"}  # the row past BIGINT is dropped, logged
    assert found["nul"].model == "gpt\ufffdevil"


def test_the_password_never_reaches_an_error_or_a_log(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = with_database("postgresql://postgres@127.0.0.1:1/x", "x", PASSWORD)
    with pytest.raises(LedgerUnavailable) as error:
        PgLedger(closed)
    assert PASSWORD not in str(error.value) and "****" in str(error.value)
    with PgLedger(with_database(pg_url, pg_url.rsplit("/", 1)[1], PASSWORD)) as pg:
        pg.record(row(T0))  # trust auth: the password is accepted and ignored
        assert pg.shown.count("****") == 1
    assert PASSWORD not in caplog.text
