"""What a request leaves behind in the state store, and what a refused one does not.

`settle_many` writes every token-window correction and budget settlement queued by finished
requests as one step (one script on Redis): it must do exactly what the `window_adjust`s and
`settle`s it replaces would have done, one after the other. On Redis (this suite's own
database, 11 unless THANOS_TEST_SETTLE_REDIS_URL says otherwise; every test uses its own key
prefix), a request by a key with rpm, tpm and a budget costs 2 scripts before its answer
(rpm; tpm and the budget, `take_and_reserve`) and one after it; a refused one leaves the
counters as documented in `test_refused_*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.helpers import client_for, config, still_state
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.governance.state import MemoryBackend, StateBackend, StateUnavailable
from thanos_asgi.governance.state._redis import RedisBackend

pytestmark = pytest.mark.anyio
REDIS_URL = os.environ.get("THANOS_TEST_SETTLE_REDIS_URL", "redis://127.0.0.1:6379/11")
DOWN_URL = "redis://:s3cretpw@127.0.0.1:1/0"
WINDOW = 60.0
TTL = 3600.0


async def _delete(prefix: str) -> None:
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)


async def _fresh_window(need: float = 5.0) -> None:
    """At least `need` seconds left in Redis's current minute (the windows' clock)."""
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        seconds, micros = await client.time()
    now = seconds + micros / 1_000_000
    left = (math.floor(now / WINDOW) + 1) * WINDOW - now
    if left < need:
        await asyncio.sleep(left + 0.01)


@pytest.fixture
def prefix() -> str:
    return f"thanos-test:{uuid.uuid4().hex}:"


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[StateBackend]:
    if request.param == "memory":
        yield still_state()  # as `_fresh_window` for Redis: the test's takes in one window
        return
    await _fresh_window()
    state = RedisBackend(REDIS_URL, key_prefix=prefix)
    try:
        yield state
    finally:
        await state.aclose()
        await _delete(prefix)


async def _used(state: StateBackend, key: str) -> int:
    return (await state.window_take(key, 0, 10**9, WINDOW)).used


# --- settle_many --------------------------------------------------------------------------


async def test_settle_many_is_the_adjusts_then_the_settles(backend: StateBackend) -> None:
    await backend.window_take("tpm:a", 100, 1000, WINDOW)
    await backend.window_take("tpm:b", 10, 1000, WINDOW)
    assert await backend.reserve("b1", 5.0, 100.0, TTL, owner="o")
    assert await backend.reserve("b2", 2.0, 100.0, TTL, owner="o")
    assert await backend.reserve("b2", 1.0, 100.0, TTL, owner="o")  # still in flight after
    adjusts = [("tpm:a", -30), ("tpm:b", -50), ("tpm:a", 5), ("tpm:c", 7)]
    settles = [("b1", 5.0, 1.5), ("b2", 2.0, 3.25), ("b3", 0.0, 0.5)]
    await backend.settle_many(adjusts, WINDOW, settles, TTL, owner="o")
    assert [await _used(backend, k) for k in ("tpm:a", "tpm:b", "tpm:c")] == [75, 0, 7]
    assert await backend.spent("b1") == (1.5, 0.0)
    assert await backend.spent("b2") == (3.25, 1.0)
    assert await backend.spent("b3") == (0.5, 0.0)
    assert not await backend.reserve("b2", 95.75 + 0.01, 100.0, TTL, owner="o")
    assert await backend.reserve("b2", 95.75, 100.0, TTL, owner="o")  # exactly what is left


async def test_settle_many_never_lowers_below_zero_nor_counts_negative_cost(
    backend: StateBackend,
) -> None:
    await backend.settle_many([], WINDOW, [], TTL)  # nothing to do: harmless
    await backend.window_take("tpm:a", 3, 1000, WINDOW)
    assert await backend.reserve("b", 1.0, 10.0, TTL, owner="o")
    await backend.settle_many([("tpm:a", -10)], WINDOW, [("b", 5.0, -2.0)], TTL, owner="o")
    assert await _used(backend, "tpm:a") == 0
    assert await backend.spent("b") == (0.0, 0.0)


async def test_settle_many_releases_only_what_its_owner_holds(prefix: str) -> None:
    """As `settle`: a settlement by a process that holds nothing in the store (its reservation
    was lost with the store's data) must not release another process's reservation."""
    state = RedisBackend(REDIS_URL, key_prefix=prefix)
    try:
        assert await state.reserve("b", 4.0, 10.0, TTL, owner="theirs")
        await state.settle_many([], WINDOW, [("b", 4.0, 1.0)], TTL, owner="mine")
        assert await state.spent("b") == (1.0, 4.0)
        await state.settle_many([], WINDOW, [("b", 4.0, 0.0)], TTL, owner="theirs")
        assert await state.spent("b") == (1.0, 0.0)
        async with aioredis.Redis.from_url(REDIS_URL) as client:
            ttl = await client.pttl(f"{prefix}budget:b")
        assert 0 < ttl <= TTL * 1000
    finally:
        await state.aclose()
        await _delete(prefix)


async def test_settle_many_on_an_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    closed = RedisBackend(DOWN_URL)
    opened = RedisBackend(DOWN_URL, fail_open=True)
    caplog.set_level(logging.WARNING, logger="thanos_asgi.governance.state")
    try:
        with pytest.raises(StateUnavailable) as caught:
            await closed.settle_many([("tpm", 1)], WINDOW, [("b", 1.0, 1.0)], TTL, owner="o")
        assert "s3cretpw" not in str(caught.value)
        await opened.settle_many([("tpm", 1)], WINDOW, [("b", 1.0, 1.0)], TTL, owner="o")
    finally:
        await closed.aclose()
        await opened.aclose()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and messages[0].endswith("fail_open: settle_many dropped")
    assert "s3cretpw" not in messages[0]


# --- take_and_reserve ---------------------------------------------------------------------

MARKER = "budget:2026-01:restored"


async def test_take_and_reserve_takes_both_or_refuses_the_budgets_whole(
    backend: StateBackend,
) -> None:
    await backend.restore(MARKER, {}, TTL)
    await _wait_grace()
    budgets = [("b1", 10.0), ("b2", 3.0)]
    taken, reserved = await backend.take_and_reserve(
        ("tpm", 40, 100, WINDOW), budgets, 2.0, TTL, marker=MARKER, owner="o"
    )
    assert (taken.allowed, taken.used, reserved) == (True, 40, True)
    assert [await backend.spent(k) for k in ("b1", "b2")] == [(0.0, 2.0), (0.0, 2.0)]
    # b2 has 1.0 left: refused whole (b1 untouched), the tokens taken all the same
    taken, reserved = await backend.take_and_reserve(
        ("tpm", 40, 100, WINDOW), budgets, 2.0, TTL, marker=MARKER, owner="o"
    )
    assert (taken.allowed, taken.used, reserved) == (True, 80, False)
    assert [await backend.spent(k) for k in ("b1", "b2")] == [(0.0, 2.0), (0.0, 2.0)]
    # over the tokens: nothing taken, nothing reserved
    taken, reserved = await backend.take_and_reserve(
        ("tpm", 40, 100, WINDOW), [("b1", 10.0)], 2.0, TTL, marker=MARKER, owner="o"
    )
    assert (taken.allowed, taken.used, taken.limit, reserved) == (False, 80, 100, None)
    assert 0 < taken.reset_after <= WINDOW
    assert await backend.spent("b1") == (0.0, 2.0)
    assert await _used(backend, "tpm") == 80


async def test_take_and_reserve_leaves_a_lost_month_to_reserve(backend: StateBackend) -> None:
    """No marker (the store lost its data): the tokens are taken, nothing is reserved, and
    None sends the caller to `reserve`, which rebuilds the month."""
    taken, reserved = await backend.take_and_reserve(
        ("tpm", 5, 100, WINDOW), [("b", 10.0)], 1.0, TTL, marker=MARKER, owner="o"
    )
    assert (taken.allowed, taken.used, reserved) == (True, 5, None)
    assert await backend.spent("b") == (0.0, 0.0)


async def _wait_grace() -> None:
    await asyncio.sleep(1.05)  # GRACE: Redis refuses reservations just after a rebuild


async def test_take_and_reserve_releases_with_its_owner(prefix: str) -> None:
    state = RedisBackend(REDIS_URL, key_prefix=prefix)
    try:
        await state.restore(MARKER, {}, TTL)
        grant = (("tpm", 1, 10, WINDOW), [("b", 10.0)], 4.0, TTL)
        _, reserved = await state.take_and_reserve(*grant, marker=MARKER, owner="mine")
        assert reserved is None  # within the grace after the rebuild: `reserve` waits it out
        await _wait_grace()
        for _ in range(2):
            _, reserved = await state.take_and_reserve(*grant, marker=MARKER, owner="mine")
            assert reserved is True
        assert await state.spent("b") == (0.0, 8.0)
        await state.settle_many([], WINDOW, [("b", 4.0, 1.0)], TTL, owner="theirs")
        assert await state.spent("b") == (1.0, 8.0)
        await state.settle_many([], WINDOW, [("b", 8.0, 0.0)], TTL, owner="mine")
        assert await state.spent("b") == (1.0, 0.0)
    finally:
        await state.aclose()
        await _delete(prefix)


# --- a keyed request end to end -------------------------------------------------------------

KEY = "thk-settle-0123456789abcdef"
CONFIG = """
[providers.paid]
kind = "openai-compatible"
base_url = "http://paid.test/v1"
models = ["m"]

[cost.providers.paid]
input_cost_per_1m_tokens = 1000000
output_cost_per_1m_tokens = 1000000

[routing]
max_retries = 0

[[server.keys]]
id = "k"
key = "{key}"
rpm = 100
tpm = {tpm}
budget_usd = {budget}
"""
PROMPT = [{"role": "user", "content": "hello there"}]  # 11 bytes: $11 of input at most


async def _upstream(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    )


def _gateway(prefix: str, tpm: int, budget: float) -> Gateway:
    return Gateway(
        config(CONFIG.format(key=KEY, tpm=tpm, budget=budget)),
        transport=HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(_upstream))),
        state=RedisBackend(REDIS_URL, key_prefix=prefix),
    )


async def _ask(gateway: Gateway, max_tokens: int) -> httpx.Response:
    body = {"model": "m", "messages": PROMPT, "max_tokens": max_tokens}
    async with client_for(build_app(gateway)) as http:
        response: httpx.Response = await http.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        )
    await gateway.accounting.drain()
    return response


class Monitor:
    """The scripts Redis runs on keys under `prefix` (MONITOR: what really crossed the wire)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.commands: list[list[str]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Monitor:
        self._task = asyncio.create_task(self._listen())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # the last commands reach the monitor
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _listen(self) -> None:
        async with aioredis.Redis.from_url(REDIS_URL) as client, client.monitor() as monitor:
            self._ready.set()
            while True:
                command: dict[str, Any] = await monitor.next_command()
                words = str(command["command"]).split(" ")
                if words[0].upper() == "EVALSHA" and self.prefix in command["command"]:
                    self.commands.append(words)


async def state(prefix: str) -> dict[str, Any]:
    """The key's windows and budget as Redis holds them."""
    month = time.strftime("%Y-%m", time.gmtime())
    async with aioredis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        rpm = await client.hget(f"{prefix}window:rpm:key:k", "n")
        tpm = await client.hget(f"{prefix}window:tpm:key:k", "n")
        budget = await client.hmget(f"{prefix}budget:budget:{month}:key:k", ["s", "r"])
    return {"rpm": rpm, "tpm": tpm, "budget": budget}


async def test_a_keyed_request_settles_tokens_and_spend_in_one_script(prefix: str) -> None:
    await _fresh_window()
    gateway = _gateway(prefix, tpm=1000, budget=1000)
    try:
        first = await _ask(gateway, max_tokens=4)  # (rebuilds the month; loads the scripts)
        async with Monitor(prefix) as seen:
            second = await _ask(gateway, max_tokens=4)
        assert first.status_code == second.status_code == 200
        assert await state(prefix) == {"rpm": "2", "tpm": "10", "budget": ["10000000", "0"]}
    finally:
        await gateway.aclose()
        await _delete(prefix)
    # before the answer: rpm, then tpm and the budget; after it: tpm and the budget
    assert len(seen.commands) == 3
    for both in seen.commands[1:]:
        words = " ".join(both)
        assert f"{prefix}window:tpm:key:k" in words and f"{prefix}budget:budget:" in words


async def test_refused_by_tpm_counts_the_request_and_holds_nothing(prefix: str) -> None:
    """As before `settle_many`: the request was counted in its rpm window (by the middleware,
    before its body was read) and stays counted; tpm and the budget are untouched."""
    await _fresh_window()
    gateway = _gateway(prefix, tpm=10, budget=1000)
    try:
        response = await _ask(gateway, max_tokens=100)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert response.headers["x-ratelimit-remaining-requests"] == "99"
        assert response.headers["x-ratelimit-remaining-tokens"] == "10"
        assert await state(prefix) == {"rpm": "1", "tpm": None, "budget": [None, None]}
    finally:
        await gateway.aclose()
        await _delete(prefix)


async def test_refused_by_the_budget_gives_the_tokens_back(prefix: str) -> None:
    """The rpm window keeps the request; its tpm hold is refunded (the window is back at 0);
    nothing is reserved or spent."""
    await _fresh_window()
    gateway = _gateway(prefix, tpm=1000, budget=10)
    try:
        response = await _ask(gateway, max_tokens=4)  # up to $11 + $4 > $10
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "budget_exceeded"
        assert response.headers["x-ratelimit-remaining-requests"] == "99"
        assert await state(prefix) == {"rpm": "1", "tpm": "0", "budget": [None, None]}
    finally:
        await gateway.aclose()
        await _delete(prefix)


FALLBACK = (
    CONFIG.replace("[routing]\n", '[routing]\nfallback_chain = ["paid", "backup"]\n')
    + """
[providers.backup]
kind = "openai-compatible"
base_url = "http://backup.test/v1"
models = ["m"]

[cost.providers.backup]
input_cost_per_1m_tokens = 1000000
output_cost_per_1m_tokens = 1000000

[health]
failure_threshold = 1
"""
)


async def _paid_fails(request: httpx.Request) -> httpx.Response:
    if request.url.host == "paid.test":
        return httpx.Response(500, json={"error": {"message": "down"}})
    return await _upstream(request)


async def test_the_first_candidates_reservation_goes_back_when_it_is_not_used(
    prefix: str,
) -> None:
    """The tokens and the first candidate's budget are taken together; that reservation is
    given back when the attempt fails (500), and when it is never made (the circuit is open):
    only the fallback's real cost stays spent, nothing stays reserved."""
    await _fresh_window()
    gateway = Gateway(
        config(FALLBACK.format(key=KEY, tpm=1000, budget=1000)),
        transport=HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(_paid_fails))),
        state=RedisBackend(REDIS_URL, key_prefix=prefix),
    )
    try:
        failed = await _ask(gateway, max_tokens=4)
        skipped = await _ask(gateway, max_tokens=4)
        assert failed.status_code == skipped.status_code == 200
        assert failed.headers["x-thanos-attempts"].startswith("paid:")
        assert skipped.headers["x-thanos-attempts"] == "paid:circuit_open,backup:ok"
        assert await state(prefix) == {"rpm": "2", "tpm": "10", "budget": ["10000000", "0"]}
        assert gateway.accounting.holds.amounts == {}
    finally:
        await gateway.aclose()
        await _delete(prefix)


class _Behind(MemoryBackend):
    """A store that takes settlements only when let: one far behind the requests."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.written = 0

    async def settle_many(self, *args: Any, **kwargs: Any) -> None:
        await self.go.wait()
        self.written += len(args[2])  # the budget settlements of this write
        await super().settle_many(*args, **kwargs)


async def test_settlements_waiting_for_a_store_far_behind_are_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that stops answering while requests go on (fail_open) must not grow the queue
    without bound: past MAX_QUEUED newer settlements are dropped (the worst case stays
    reserved: never less spent), this process's holds still go back, and one warning says so."""
    from thanos_asgi.governance._holds import Holds
    from thanos_asgi.governance._settlements import MAX_QUEUED, Settlements

    async def nothing(_: str) -> None:
        return None

    state = _Behind()
    holds = Holds(state, nothing)
    queue = Settlements(state, holds, lambda: asyncio.sleep(0))
    extra = 1_000
    holds.add("budget:m:key:k", 1.0 * (MAX_QUEUED + extra + 1))
    with caplog.at_level(logging.WARNING, logger="thanos_asgi.governance.accounting"):
        queue.budgets(["budget:m:key:k"], 1.0, 0.5)  # taken by the worker, which now waits
        await asyncio.sleep(0)
        for _ in range(MAX_QUEUED + extra):
            queue.budgets(["budget:m:key:k"], 1.0, 0.5)
    assert len(queue._settles) == MAX_QUEUED
    # held: the queued ones only (the one being written and the dropped ones gave theirs back)
    assert holds.amounts["budget:m:key:k"] == pytest.approx(1.0 * MAX_QUEUED)
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    state.go.set()
    await queue.drain()
    assert state.written == MAX_QUEUED + 1
    assert holds.amounts == {}
