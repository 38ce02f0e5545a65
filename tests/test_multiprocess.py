"""Several real gateway processes: a shared Redis limit, and a ledger that survives kill -9."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import clear_of_the_minute
from tests.servers import Upstream, free_port, running, serve_command, serve_env

pytestmark = pytest.mark.anyio
SECRET = "thk_multi-process-secret-0123456789abcdef"


@contextmanager
def gateway_process(config: Path, home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [*serve_command(config), "--port", str(port), "--log-level", "warning"],
        env=serve_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise AssertionError(output) from None
                time.sleep(0.05)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


async def chat(http: httpx.AsyncClient, url: str) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {SECRET}"}
    return await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)


async def test_two_gateways_on_one_redis_share_a_60_rpm_limit(tmp_path: Path) -> None:
    key_id = f"shared-{uuid.uuid4().hex[:8]}"  # a fresh window whatever ran before
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(
            f'[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:6379/0"\n'
            f'[[server.keys]]\nid = "{key_id}"\nkey = "{SECRET}"\nrpm = 60\n'
            f'[providers.local]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
            'models = ["m"]\n'
        )
        with (
            gateway_process(config, tmp_path) as (one, _),
            gateway_process(config, tmp_path) as (
                two,
                _,
            ),
        ):
            async with httpx.AsyncClient(timeout=30) as http:
                await clear_of_the_minute(10)  # all 200 in one window of Redis `TIME`
                urls = [one, two] * 100
                responses = await asyncio.gather(*(chat(http, url) for url in urls))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60, statuses
    assert statuses.count(429) == 140
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


async def test_ledger_survives_kill_minus_9_under_load(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(
            f'[cost]\nledger_path = "{ledger}"\n'
            "[cost.providers.local]\ninput_cost_per_1m_tokens = 1000\n"
            "output_cost_per_1m_tokens = 2000\n"
            f'[providers.local]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
            'models = ["m"]\n'
        )
        answered: list[httpx.Response] = []
        with gateway_process(config, tmp_path) as (url, process):
            async with httpx.AsyncClient(timeout=10) as http:

                async def worker() -> None:
                    while True:
                        try:
                            answered.append(await chat(http, url))
                        except httpx.TransportError:
                            return

                workers = [asyncio.create_task(worker()) for _ in range(8)]
                for _ in range(3000):  # up to 30 s for 150 answers
                    if len(answered) >= 150:
                        break
                    await asyncio.sleep(0.01)
                process.send_signal(signal.SIGKILL)
                await asyncio.gather(*workers)
        with gateway_process(config, tmp_path) as (url, _):
            async with httpx.AsyncClient(timeout=10) as http:
                answered.append(await chat(http, url))  # the restarted gateway serves again
    ok = [r for r in answered if r.status_code == 200]
    assert len(ok) >= 151
    with sqlite3.connect(ledger) as db:
        rows = dict(db.execute("SELECT request_id, cost_usd FROM requests").fetchall())
    for response in ok:
        request_id = response.headers["x-request-id"]
        assert request_id in rows, f"no ledger row for a request that got a response: {request_id}"
        assert rows[request_id] == pytest.approx(float(response.headers["x-thanos-cost-usd"]))
