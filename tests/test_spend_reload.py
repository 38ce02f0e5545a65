"""`thanos serve` as a process: a SIGHUP reload keeps the memory backend's rate windows and
month-to-date spend, so 200 concurrent mixed requests before and 200 after the reload spend no
more than the key's $0.01 budget in all, and a key at its rpm stays at it."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.helpers import openai_compatible
from tests.servers import Upstream, running, thanos_serve
from thanos_asgi.governance.ledger import Ledger

pytestmark = pytest.mark.anyio
SPENDER, LIMITED = "thk-spender-0123456789abcdef", "thk-limited-0123456789abcdef"
# $100 per million tokens in and out: the upstream's answers (5 + 7 tokens) cost $0.0012
KEYS = f"""
[cost.providers.one]
input_cost_per_1m_tokens = 100
output_cost_per_1m_tokens = 100

[[server.keys]]
id = "spender"
key = "{SPENDER}"
budget_usd = 0.01

[[server.keys]]
id = "limited"
key = "{LIMITED}"
rpm = 3
"""
LIMITS: list[Any] = [1, 5, 20, 50, None, 0, -1, -1_000_000_000, 10**9, 2**62]


async def barrage(http: httpx.AsyncClient, seed: int) -> list[int]:
    rng = random.Random(seed)
    headers = {"authorization": f"Bearer {SPENDER}"}

    async def one(index: int) -> int:
        body: dict[str, Any] = {"model": "one/m", "messages": [{"role": "user", "content": "hi"}]}
        limit = rng.choice(LIMITS)
        if limit is not None:
            body["max_tokens"] = limit
        body["stream"] = index % 3 == 0
        response = await http.post("/v1/chat/completions", json=body, headers=headers)
        return response.status_code

    return list(await asyncio.gather(*(one(i) for i in range(200))))


def spent(ledger: Path) -> float:
    with Ledger(ledger) as book:
        return sum(r.cost_usd or 0.0 for r in book.rows() if r.key_id == "spender")


async def limited(http: httpx.AsyncClient) -> httpx.Response:
    body = {"model": "one/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    headers = {"authorization": f"Bearer {LIMITED}"}
    return await http.post("/v1/chat/completions", json=body, headers=headers)


async def test_sighup_keeps_spend_and_rate_windows(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    text = f'[cost]\nledger_path = "{ledger}"\n\n' + KEYS
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(openai_compatible("one", upstream) + text)
        async with thanos_serve(config) as (port, process, log):
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                await _ready(http, process)
                before = await barrage(http, seed=1)
                windows = await three_in_one_minute(http)
                process.send_signal(signal.SIGHUP)
                await _logged(log, "config reloaded")
                after_limited = await limited(http)
                after = await barrage(http, seed=2)
            await asyncio.sleep(0.3)  # the last rows into the ledger
    total = spent(ledger)
    assert before.count(200) > 0 and set(before) | set(after) <= {200, 400, 429}
    assert [r.status_code for r in windows] == [200, 200, 200]
    assert windows[-1].headers["x-ratelimit-remaining-requests"] == "0"
    assert after_limited.status_code == 429  # the minute's window survived the reload
    assert after_limited.headers["x-ratelimit-limit-requests"] == "3"
    assert 0.005 < total <= 0.01, (before.count(200), after.count(200), total)
    print(f"serve + SIGHUP: ${total:.6f} spent by 400 requests of a $0.01 budget")


async def three_in_one_minute(http: httpx.AsyncClient) -> list[httpx.Response]:
    """Three requests of the rpm=3 key, all in one minute window (fixed windows) and early
    enough in it that the one after the reload falls in the same window."""
    for _ in range(2):
        windows = [await limited(http) for _ in range(3)]
        left = seconds(windows[-1].headers["x-ratelimit-reset-requests"])
        if left > 15 and windows[-1].headers["x-ratelimit-remaining-requests"] == "0":
            break  # (not "0": a window began between the three)
        await asyncio.sleep(left + 0.2)
    return windows


def seconds(duration: str) -> float:
    """OpenAI's reset duration ("20ms", "7s", "1m0s") in seconds."""
    if duration.endswith("ms"):
        return int(duration[:-2]) / 1000
    minutes, _, rest = duration.rstrip("s").rpartition("m")
    return int(minutes or 0) * 60 + int(rest)


async def _ready(http: httpx.AsyncClient, process: Any) -> None:
    for _ in range(300):
        try:
            if (await http.get("/health", timeout=0.5)).status_code == 200:
                return
        except httpx.TransportError:
            assert process.returncode is None
            await asyncio.sleep(0.05)
    raise AssertionError("thanos serve did not start")


async def _logged(log: Path, text: str) -> None:
    for _ in range(200):
        if text in await anyio.Path(log).read_text():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not logged")
