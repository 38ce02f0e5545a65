"""Money holds under hostile clients: reservations are never negative, and month-to-date spend
survives a new process (rebuilt from the ledger) and a Redis restarted empty. 200 concurrent
requests mixing valid and adversarial parameters never spend more than a $0.01 budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import client_for, config, still_state
from tests.servers import free_port
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.context import Context, KeyPolicy
from thanos_asgi.governance.ledger import Ledger
from thanos_asgi.governance.state import (
    GRACE,
    MemoryBackend,
    SpendLost,
    SpendSettling,
    StateBackend,
    StateUnavailable,
)
from thanos_asgi.governance.state._redis import RedisBackend
from thanos_asgi.types import ChatRequest, Message, Target

pytestmark = pytest.mark.anyio
SHARED_REDIS = "redis://127.0.0.1:6379/0"
KEY = "thk-spender-0123456789abcdef"
MODEL_MAX = 4096  # what the fake model writes at most (and when max_tokens is unusable)

# $1 per million tokens in and out; the key may spend $0.01
PRICED = f"""
[providers.paid]
kind = "openai-compatible"
base_url = "http://paid.test/v1"
models = ["m", "e"]

[cost.providers.paid]
input_cost_per_1m_tokens = 1
output_cost_per_1m_tokens = 1

[routing]
max_retries = 0

[[server.keys]]
id = "spender"
key = "{KEY}"
budget_usd = 0.01
"""
# valid and adversarial output limits (None: not sent)
LIMITS: list[Any] = [5, 50, 500, 2000, None, 0, -1, -5, -1_000_000_000, 10**9, 2**31, 2**62]


def written(body: dict[str, Any]) -> int:
    """What the fake model writes: the limit it was given when usable, else its maximum."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit if isinstance(limit, int) and 1 <= limit <= MODEL_MAX else MODEL_MAX


async def metered(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    await asyncio.sleep(0.005)
    if request.url.path.endswith("/embeddings"):  # within the gateway's estimate: 4 bytes
        tokens = -(-len(body["input"]) // 4)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        data = [{"object": "embedding", "index": 0, "embedding": [0.5]}]
        answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return httpx.Response(200, json=answer)
    out = written(body)
    usage = {"prompt_tokens": 5, "completion_tokens": out, "total_tokens": 5 + out}
    if body.get("stream"):
        head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        delta = {**head, "choices": [{"index": 0, "delta": {"content": "x"}}]}
        last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        events = [delta, last, {**head, "choices": [], "usage": usage}]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=text, headers={"content-type": "text/event-stream"})
    message = {"role": "assistant", "content": "x"}
    choice = {"index": 0, "message": message, "finish_reason": "length"}
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        },
    )


def gateway(state: StateBackend, ledger: Path, text: str = PRICED) -> Gateway:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(metered)))
    return Gateway(config(text), transport=transport, state=state, ledger=Ledger(ledger))


def mixed(index: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """One request of the mix: chat (streamed or not) with any of LIMITS, or embeddings."""
    if index % 10 == 9:
        return "/v1/embeddings", {"model": "paid/e", "input": "x" * rng.randint(1, 2000)}
    body: dict[str, Any] = {"model": "paid/m", "messages": [{"role": "user", "content": "hi"}]}
    limit = rng.choice(LIMITS)
    if limit is not None:
        body[rng.choice(["max_tokens", "max_completion_tokens"])] = limit
    body["stream"] = index % 3 == 0
    return "/v1/chat/completions", body


async def barrage(http: Any, seed: int, count: int = 200) -> list[int]:
    """`count` concurrent requests of the mix; their statuses."""
    rng = random.Random(seed)
    requests = [mixed(i, rng) for i in range(count)]
    headers = {"authorization": f"Bearer {KEY}"}

    async def one(path: str, body: dict[str, Any]) -> int:
        response = await http.post(path, json=body, headers=headers)
        if response.status_code == 503:  # fail closed: the store did not answer in time
            assert response.json()["error"]["code"] == "state_unavailable", response.text
        return int(response.status_code)

    return list(await asyncio.gather(*(one(path, body) for path, body in requests)))


async def post(http: Any, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}"}
    response: httpx.Response = await http.post("/v1/chat/completions", json=body, headers=headers)
    return response


def ledger_spend(path: Path) -> tuple[float, int]:
    """What the ledger says the key spent this month, and over how many priced rows."""
    with Ledger(path) as ledger:
        rows = [r for r in ledger.rows() if r.key_id == "spender" and r.cost_usd]
    return sum(r.cost_usd or 0.0 for r in rows), len(rows)


async def spend_round(state: StateBackend, ledger: Path, seed: int) -> list[int]:
    gw = gateway(state, ledger)
    gw.owns_state = False  # the next round goes on with the same store
    async with client_for(build_app(gw)) as http:
        statuses = await barrage(http, seed)
    await gw.aclose()
    return statuses


@contextlib.asynccontextmanager
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    """A redis-server of our own (no persistence) on a free port; yields its URL and a
    function that restarts it empty."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]  # fmt: skip
    processes: list[asyncio.subprocess.Process] = []

    async def start() -> None:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, cwd=tmp_path
        )
        processes.append(process)
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.02)
        raise AssertionError("redis-server did not start")

    async def restart() -> None:
        processes[-1].terminate()
        await asyncio.wait_for(processes[-1].wait(), 10)
        await start()

    await start()
    try:
        yield f"redis://127.0.0.1:{port}/0", restart
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 10)


# -- reservations are never negative ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_negative_max_tokens_cannot_spend_an_exhausted_budget(
    backend: str, tmp_path: Path
) -> None:
    state: StateBackend = MemoryBackend()
    if backend == "redis":
        state = RedisBackend(SHARED_REDIS, key_prefix=f"thanos-test-{uuid.uuid4().hex}:")
    gw = gateway(state, tmp_path / "usage.db", PRICED.replace("0.01", "0.004"))
    body = {"model": "paid/m", "messages": [{"role": "user", "content": "hi"}]}
    async with client_for(build_app(gw)) as http:
        first = await post(http, {**body, "max_tokens": 3990})
        await gw.accounting.drain()  # settled: spent, no longer reserved
        hostile = [await post(http, {**body, "max_tokens": -1_000_000_000}) for _ in range(20)]
    await gw.aclose()
    assert first.status_code == 200
    statuses = {r.status_code for r in hostile}
    assert statuses <= {400, 429}  # 400 where the front door validates max_tokens
    if statuses == {400}:
        return
    message = next(r for r in hostile if r.status_code == 429).json()["error"]["message"]
    assert "budget of $0.004 this month has $0.000005 left ($0.003995 spent)" in message
    assert "would cost up to $0.004105" in message  # 9 + the 4,096 of the default output


async def test_a_negative_max_tokens_stream_does_not_open_the_tokens_window() -> None:
    text = PRICED.replace("budget_usd = 0.01", "tpm = 2000")
    gw = gateway(still_state(), Path(":memory:"), text)  # all 21 in one minute window
    body = {"model": "paid/m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with client_for(build_app(gw)) as http:
        hostile = await post(http, {**body, "max_tokens": -(10**9)})
        normal = await asyncio.gather(*(post(http, {**body, "max_tokens": 900}) for _ in range(20)))
    await gw.aclose()
    assert hostile.status_code in (200, 400)  # 400 where the front door validates it
    statuses = [r.status_code for r in normal]
    assert statuses.count(200) <= 2 and statuses.count(429) >= 18
    refused = next(r for r in normal if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-tokens"] == "2000"
    assert int(refused.headers["x-ratelimit-remaining-tokens"]) < 900


@pytest.mark.parametrize("limit", [None, 0, -1, -(10**9), 10**9, 2**62])
async def test_reservations_are_never_negative_whatever_the_output_limit(limit: Any) -> None:
    """The reservation math alone (what holds even where no front door validated the
    request): an unusable limit reserves the default output, an absurd one is cut."""
    text = PRICED.replace("budget_usd = 0.01", "budget_usd = 1000000\ntpm = 100000000")
    gw = gateway(MemoryBackend(), Path(":memory:"), text)
    policy = gw.config.server.keys[0]
    ctx = Context(key_id="spender", policy=KeyPolicy("spender", tpm=policy.tpm, budget_usd=1e6))
    request = ChatRequest(
        model="paid/m", messages=[Message(role="user", content="hi")], max_tokens=limit
    )
    tokens = await gw.accounting.admit_request(request, ctx)
    admission = await gw.accounting.admit(Target("paid", "m"), request, ctx)
    await gw.aclose()
    output = 4096 if limit is None or limit < 1 else 1_000_000
    assert tokens.estimate == 8 + (0 if limit is None or limit < 1 else 1_000_000)
    assert admission.worst_case == pytest.approx((9 + output) / 1_000_000)  # 2 bytes + 7


async def dense(request: httpx.Request) -> httpx.Response:
    """A provider that bills one token per byte of prompt: the densest any tokenizer gets."""
    body = json.loads(request.content)
    await asyncio.sleep(0.01)
    prompt = sum(len(m["content"].encode()) for m in body["messages"]) + 7
    usage = {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1}
    message = {"role": "assistant", "content": "x"}
    choice = {"index": 0, "message": message, "finish_reason": "length"}
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "m"}
    return httpx.Response(200, json={**answer, "choices": [choice], "usage": usage})


async def test_a_densely_tokenised_prompt_cannot_outgrow_its_reservation() -> None:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(dense)))
    gw = Gateway(config(PRICED), transport=transport, state=MemoryBackend())
    prompt = "\u00e9\u4e2d!" * 300  # 1,800 bytes that a 4-bytes-a-token estimate takes for 450
    body = {"model": "paid/m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
    async with client_for(build_app(gw)) as http:
        answers = await asyncio.gather(*(post(http, body) for _ in range(50)))
    await gw.accounting.drain()
    spent, reserved = await gw.state.spent(f"budget:{month()}:key:spender")
    await gw.aclose()
    served = [a.status_code for a in answers].count(200)
    assert spent <= 0.01 and reserved == 0 and served == 5  # 1,808 tokens, $0.001808 each


# -- 200 concurrent hostile requests against $0.01 ------------------------------------------


async def test_200_mixed_requests_never_overspend_on_memory_across_a_new_process(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "usage.db"
    first = await spend_round(MemoryBackend(), ledger, seed=1)
    spent, rows = ledger_spend(ledger)
    assert 0.002 < spent <= 0.01 and first.count(200) == rows  # as near as in-flight allows
    # a new process: empty memory, the month's spend comes back from the ledger
    second = await spend_round(MemoryBackend(), ledger, seed=2)
    again, _ = ledger_spend(ledger)
    assert 0.005 < again <= 0.01 and set(first) | set(second) <= {200, 400, 429, 503}
    print(f"memory: ${spent:.6f} after 200, ${again:.6f} after 400 (budget $0.01)")


async def test_200_mixed_requests_never_overspend_on_redis_restarted_empty(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "usage.db"
    async with private_redis(tmp_path) as (url, restart):
        state = RedisBackend(url)
        first = await spend_round(state, ledger, seed=3)
        spent, rows = ledger_spend(ledger)
        # how near one round gets depends on what is in flight together: an embedding holds
        # one token per byte until it settles at a quarter of that (seen: $0.0047 to $0.0091)
        assert 0.002 < spent <= 0.01 and first.count(200) == rows
        await restart()  # no persistence: the month's spend is gone from Redis
        second = await spend_round(state, ledger, seed=4)
        again, _ = ledger_spend(ledger)
        assert await state.spent(f"budget:{month()}:key:spender") == (pytest.approx(again), 0)
        await state.aclose()
    assert 0.005 < again <= 0.01 and set(second) <= {200, 400, 429, 503}
    print(f"redis: ${spent:.6f} after 200, ${again:.6f} after a restart and 200 more")


def month() -> str:
    import time

    return time.strftime("%Y-%m", time.gmtime())


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_restore_raises_spend_once_and_sets_the_marker(backend: str) -> None:
    state: StateBackend = MemoryBackend()
    if backend == "redis":
        state = RedisBackend(SHARED_REDIS, key_prefix=f"thanos-test-{uuid.uuid4().hex}:")
    with pytest.raises(SpendLost):
        await state.reserve("budget:k", 1.0, 10.0, 60, marker="m")
    await state.settle("budget:k", 0.0, 2.0, 60)  # settled after the loss: kept if larger
    assert await state.restore("m", {"budget:k": 1.5, "budget:j": 3.0}, 60) is True
    assert await state.restore("m", {"budget:k": 9.0}, 60) is False  # once only
    assert await state.spent("budget:k") == (2.0, 0.0)
    assert await state.spent("budget:j") == (3.0, 0.0)
    assert await state.generation("m") is not None
    if state.shared:  # the others have GRACE seconds to put their reservations back
        with pytest.raises(SpendSettling) as settling:
            await state.reserve("budget:j", 7.0, 10.0, 60, marker="m")
        assert 0 < settling.value.wait <= GRACE
        await asyncio.sleep(settling.value.wait)
    assert await state.reserve("budget:j", 7.0, 10.0, 60, marker="m") is True
    assert await state.reserve("budget:j", -5.0, 10.0, 60, marker="m") is True  # counts as 0
    assert await state.spent("budget:j") == (3.0, 7.0)
    await state.aclose()


async def test_the_ledger_sums_a_months_spend_per_key_and_provider(tmp_path: Path) -> None:
    from thanos_asgi.governance.ledger import LedgerRow

    with Ledger(tmp_path / "usage.db") as ledger:
        for ts, key, provider, cost in [
            (100.0, "a", "p", 1.0),  # before the month
            (200.0, "a", "p", 2.0),
            (201.0, "a", "q", 0.5),
            (202.0, None, "p", 0.25),
            (203.0, "b", "p", None),  # an error row: no cost
        ]:
            ledger.record(LedgerRow(ts=ts, request_id="r", key_id=key, provider=provider,
                                    model="m", cost_usd=cost))  # fmt: skip
        spend = ledger.spend(since=150.0)
    assert spend.total == pytest.approx(2.75)
    assert spend.keys == {"a": pytest.approx(2.5), "b": 0.0}
    assert spend.providers == {"p": pytest.approx(2.25), "q": pytest.approx(0.5)}


# -- the store loses its data while requests are in flight --------------------------------


async def slow_metered(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(1.5)
    return await metered(request)


async def test_reservations_in_flight_survive_a_flush_across_processes(tmp_path: Path) -> None:
    """Two gateways (as two processes: each its own Redis client) on one Redis and one
    ledger. A holds four slow requests when Redis is flushed; B's requests after the
    rebuild must see A's reservations, so the month's spend stays within $0.01."""
    import redis.asyncio as aioredis

    ledger = tmp_path / "usage.db"
    body = {"model": "paid/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000}
    async with private_redis(tmp_path) as (url, _):
        slow = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(slow_metered)))
        a = Gateway(config(PRICED), transport=slow, state=RedisBackend(url), ledger=Ledger(ledger))
        b = gateway(RedisBackend(url), ledger)
        async with client_for(build_app(a)) as http_a, client_for(build_app(b)) as http_b:
            warm = await post(http_b, {**body, "max_tokens": 1})  # rebuilds the month, waits
            assert warm.status_code == 200  # out its grace ($0.000006)
            held = [asyncio.ensure_future(post(http_a, body)) for _ in range(4)]
            await asyncio.sleep(0.5)  # A's four reservations are in ($0.00804 of $0.01)
            flusher = aioredis.Redis.from_url(url)
            await flusher.flushdb()
            await flusher.aclose()
            later = await asyncio.gather(*(post(http_b, body) for _ in range(6)))
            first = await asyncio.gather(*held)
        await a.aclose()
        await b.aclose()
    assert [r.status_code for r in first] == [200] * 4, [r.text for r in first]
    assert [r.status_code for r in later] == [429] * 6, [r.text for r in later]
    spent, rows = ledger_spend(ledger)
    assert rows == 5 and spent <= 0.01


class _SpentFails(MemoryBackend):
    """A store that fails, once told to, when asked how much of the global budget is spent:
    the last step of an admission, after every budget was reserved."""

    failing = False

    async def spent(self, key: str) -> tuple[float, float]:
        if self.failing and key.endswith(":global"):
            raise StateUnavailable("the store went away")
        return await super().spent(key)


@pytest.mark.parametrize("tpm", [None, 100000])  # without tpm: `admit`; with: `admit_chat`
async def test_a_store_failing_after_the_reservations_keeps_none_of_them(tpm: Any) -> None:
    text = PRICED.replace("[routing]", "[cost]\nmonthly_budget_usd = 1000\n\n[routing]")
    state = _SpentFails()
    gw = gateway(state, Path(":memory:"), text)
    ctx = Context(key_id="spender", policy=KeyPolicy("spender", tpm=tpm, budget_usd=0.01))
    request = ChatRequest(model="paid/m", messages=[Message(role="user", content="hi")])
    target = Target("paid", "m")
    await gw.accounting.release(await gw.accounting.admit(target, request, ctx))  # month known
    state.failing = True
    with pytest.raises(StateUnavailable):
        if tpm is None:
            await gw.accounting.admit(target, request, ctx)
        else:
            await gw.accounting.admit_chat(request, ctx, target)
    await gw.accounting.drain()
    state.failing = False
    for budget in (f"budget:{month()}:key:spender", f"budget:{month()}:global"):
        assert await state.spent(budget) == (0.0, 0.0), budget
    assert gw.accounting.holds.amounts == {}
    if tpm is not None:  # the tokens went back too
        window = await state.window_take("tpm:key:spender", 0, tpm, 60)
        assert window.used == 0
    await gw.aclose()
