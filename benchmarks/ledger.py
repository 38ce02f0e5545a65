"""What the usage ledger costs per request, on each backend (SQLite file, PostgreSQL).

    .venv/bin/python benchmarks/ledger.py [--rows 5000] [--repeat 5]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--prefix thanos_bench_]

Three figures per backend, in microseconds per row, the median of `--repeat` runs:

- `queue` the request path: what the gateway pays before the answer goes out (`queue` from a
  running event loop: the journal append, one write(2), plus handing the row on);
- `import` per row, when `--rows` queued rows are imported in one batch (SQLite: `flush` in the
  caller; PostgreSQL: from the first `queue` until the import thread has them all in);
- `record` a row inserted and committed on its own, synchronously (no journal).

The PostgreSQL figures use a fresh database named `<prefix><random>` on the server `--postgres`
points at, dropped at the end. Loopback only: a PostgreSQL across a network adds its round
trip to `record` and to each import batch, never to `queue`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thanos_asgi.governance.ledger import Ledger, LedgerRow
from thanos_asgi.governance.ledgers import UsageLedger


def rows(count: int) -> list[LedgerRow]:
    now = time.time()
    fields = ("team", "openai", "gpt-4o-mini", 120, 40, 0, 0, 0.00012, "ok", 210.5, "openai#1")
    return [LedgerRow(now, f"req-{i}", *fields) for i in range(count)]  # type: ignore[arg-type]


def per_row(seconds: float, count: int) -> float:
    return seconds / count * 1e6


async def queue_then_import(
    ledger: UsageLedger, batch: list[LedgerRow], count: Callable[[], int]
) -> tuple[float, float]:
    """(µs per `queue` call, µs per row until all are imported)."""
    before = count()
    start = time.perf_counter()
    for row in batch:
        ledger.queue(row)
    queued = time.perf_counter() - start
    ledger.flush()  # SQLite imports here; PostgreSQL's thread has been importing meanwhile
    while count() < before + len(batch):  # noqa: ASYNC110 (polling the database, no event)
        await asyncio.sleep(0.0005)
    imported = time.perf_counter() - start
    return per_row(queued, len(batch)), per_row(imported, len(batch))


def record(ledger: UsageLedger, batch: list[LedgerRow]) -> float:
    start = time.perf_counter()
    for row in batch:
        ledger.record(row)
    return per_row(time.perf_counter() - start, len(batch))


def measure(name: str, ledger: UsageLedger, args: argparse.Namespace) -> None:
    counted = [0]

    def count() -> int:
        counted[0] = sum(group["requests"] for group in ledger.report(group_by="key"))
        return counted[0]

    queued, imported, recorded = [], [], []
    for _ in range(args.repeat):
        q, i = asyncio.run(queue_then_import(ledger, rows(args.rows), count))
        queued.append(q)
        imported.append(i)
        recorded.append(record(ledger, rows(max(args.rows // 10, 100))))
    print(
        f"{name:<11} queue {statistics.median(queued):7.1f} µs   "
        f"import {statistics.median(imported):7.1f} µs/row   "
        f"record {statistics.median(recorded):8.1f} µs"
    )


@contextmanager
def postgres_database(admin: str, prefix: str) -> Iterator[str]:
    import psycopg

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"'.encode())
        try:
            yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
        finally:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--prefix", default="thanos_bench_")
    parser.add_argument("--dir", default=None, help="where the SQLite file and journals go")
    args = parser.parse_args()
    print(f"{args.rows} rows a run, median of {args.repeat} runs; µs per row")
    from thanos_asgi.governance.ledger_pg import PgLedger

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        print(f"SQLite file and journals in {folder}")
        with Ledger(Path(folder) / "usage.db") as lite:
            measure("sqlite", lite, args)
        with (
            postgres_database(args.postgres, args.prefix) as url,
            PgLedger(url, journals=Path(folder) / "pg-journals") as pg,
        ):
            measure("postgresql", pg, args)


if __name__ == "__main__":
    main()
