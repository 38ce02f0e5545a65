"""Budgets on a ledger every replica writes (PostgreSQL) through a Redis that loses its data: a
request another replica has answered, whose row is not in the ledger yet, still counts in the
month's rebuild."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis

from tests.helpers import client_for, config
from tests.postgres import pg_url
from tests.test_spend import PRICED, metered, post, private_redis
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.governance.ledger_pg import PgLedger
from thanos_asgi.governance.ledger_pg_schema import TABLE
from thanos_asgi.governance.state._redis import RedisBackend

__all__ = ["pg_url"]  # the fixture

pytestmark = pytest.mark.anyio


async def replica(redis_url: str, ledger_url: str, journals: Path) -> Gateway:
    """A gateway as one replica runs it: its own Redis client, its own journal, one ledger.
    (The ledger opens in a thread: it connects to PostgreSQL synchronously.)"""
    ledger = await asyncio.to_thread(PgLedger, ledger_url, journals=journals)
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(metered)))
    return Gateway(
        config(PRICED), transport=transport, state=RedisBackend(redis_url), ledger=ledger
    )


def priced_rows(url: str) -> tuple[float, int]:
    with psycopg.connect(url) as db:
        found = db.execute(
            f"SELECT COALESCE(SUM(cost_usd), 0)::float8, COUNT(cost_usd) FROM {TABLE} "
            "WHERE key_id = 'spender'"
        ).fetchone()
    assert found is not None
    return float(found[0]), int(found[1])


async def test_answers_not_yet_in_the_ledger_count_when_redis_is_flushed(
    pg_url: str, tmp_path: Path
) -> None:
    """B answers four requests ($0.00802 of the key's $0.01) while PostgreSQL cannot take their
    rows (a lock held by someone else), then Redis is flushed and A rebuilds the month from
    the ledger, which does not have them. B still holds them until their rows are in, and puts
    them back: A's requests are refused, and the ledger ends within the budget."""
    body = {"model": "paid/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000}
    async with private_redis(tmp_path) as (url, _):
        a = await replica(url, pg_url, tmp_path / "a")
        b = await replica(url, pg_url, tmp_path / "b")
        async with client_for(build_app(a)) as http_a, client_for(build_app(b)) as http_b:
            warm = await post(http_a, {**body, "max_tokens": 1})  # rebuilds the month and
            assert warm.status_code == 200  # waits out its grace ($0.000006)
            await a.accounting.drain()
            blocker = await psycopg.AsyncConnection.connect(pg_url)
            try:
                await blocker.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")  # reads go on
                answered = await asyncio.gather(*(post(http_b, body) for _ in range(4)))
                assert [r.status_code for r in answered] == [200] * 4
                flusher = aioredis.Redis.from_url(url)
                await flusher.flushdb()
                await flusher.aclose()
                later = await asyncio.gather(*(post(http_a, body) for _ in range(6)))
            finally:
                await blocker.rollback()  # the rows go in now
                await blocker.close()
            await b.accounting.drain()
        await a.aclose()
        await b.aclose()
    assert [r.status_code for r in later] == [429] * 6, [r.text for r in later]
    spent, rows = await asyncio.to_thread(priced_rows, pg_url)
    assert rows == 5 and spent <= 0.01


async def test_a_ledger_that_does_not_answer_does_not_hold_settlements_up(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL takes no rows (a lock held by someone else): the budget is settled anyway
    after ROWS_WAIT, so the reservation does not stay at its worst case, and a shutdown waits
    for nothing more."""
    from thanos_asgi.governance import _settlements

    monkeypatch.setattr(_settlements, "ROWS_WAIT", 0.5)
    body = {"model": "paid/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000}
    async with private_redis(tmp_path) as (url, _):
        b = await replica(url, pg_url, tmp_path / "b")
        async with client_for(build_app(b)) as http_b:
            assert (await post(http_b, {**body, "max_tokens": 1})).status_code == 200
            await b.accounting.drain()
            blocker = await psycopg.AsyncConnection.connect(pg_url)
            try:
                await blocker.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
                assert (await post(http_b, body)).status_code == 200
                await asyncio.wait_for(b.accounting.drain(), 5)  # settled without the row
                assert b.accounting.holds.amounts == {}
            finally:
                await blocker.rollback()
                await blocker.close()
        await b.aclose()
    spent, rows = await asyncio.to_thread(priced_rows, pg_url)
    assert rows == 2 and spent == pytest.approx(0.002005 + 0.000006)
