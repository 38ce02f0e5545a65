"""The shared-state backends: windows, budgets and records, in memory and in a real Redis.

Redis tests need the server at THANOS_TEST_REDIS_URL (default redis://127.0.0.1:6379/0);
they fail, never skip, when it is down. Each test uses its own key prefix and deletes it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from thanos_asgi.config import StateConfig
from thanos_asgi.exceptions import ConfigError
from thanos_asgi.governance.state import (
    MemoryBackend,
    StateBackend,
    StateUnavailable,
    WindowResult,
    open_backend,
)
from thanos_asgi.governance.state._redis import RedisBackend

REDIS_URL = os.environ.get("THANOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN_URL = "redis://:s3cretpw@127.0.0.1:1/0"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A backend plus a way to move its clock: the fake clock, or real sleeps for Redis."""

    backend: StateBackend
    kind: str
    clock: FakeClock

    async def now(self) -> float:
        if self.kind == "memory":
            return self.clock.now
        async with aioredis.Redis.from_url(REDIS_URL) as client:
            seconds, micros = await client.time()
        return seconds + micros / 1_000_000

    async def fresh_window(self, window: float, need: float) -> None:
        """Make sure at least `need` seconds are left in the current window."""
        now = await self.now()
        left = (math.floor(now / window) + 1) * window - now
        if left < need:
            await self.sleep(left + 0.01)

    async def next_window(self, window: float) -> None:
        now = await self.now()
        await self.sleep((math.floor(now / window) + 1) * window - now + 0.01)

    async def sleep(self, seconds: float) -> None:
        if self.kind == "memory":
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)


def new_prefix() -> str:
    return f"thanos-test:{uuid.uuid4().hex}:"


async def delete_prefix(prefix: str) -> None:
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)


@pytest.fixture
def prefix() -> str:
    return new_prefix()


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Harness]:
    clock = FakeClock()
    if request.param == "memory":
        yield Harness(MemoryBackend(clock=clock), "memory", clock)
        return
    backend = RedisBackend(REDIS_URL, key_prefix=prefix)
    try:
        yield Harness(backend, "redis", clock)
    finally:
        await backend.aclose()
        await delete_prefix(prefix)


# --- budgets ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("amount", "limit", "actual", "spent"), [(1.0, 50.0, 0.9, 45.0), (0.1, 5.0, 0.09, 4.5)]
)
async def test_concurrent_reservations_never_overspend(
    harness: Harness, amount: float, limit: float, actual: float, spent: float
) -> None:
    backend = harness.backend
    granted = await asyncio.gather(*(backend.reserve("k", amount, limit, 60) for _ in range(200)))
    assert granted.count(True) == 50
    assert await backend.spent("k") == (0.0, limit)
    await asyncio.gather(*(backend.settle("k", amount, actual, 60) for _ in range(50)))
    assert await backend.spent("k") == (spent, 0.0)
    assert await backend.reserve("k", limit - spent + 0.000001, limit, 60) is False
    assert await backend.reserve("k", limit - spent, limit, 60) is True


@pytest.mark.anyio
async def test_two_redis_pools_share_one_budget(prefix: str) -> None:
    first = RedisBackend(REDIS_URL, key_prefix=prefix)
    second = RedisBackend(REDIS_URL, key_prefix=prefix)
    try:
        calls = [(first, second)[i % 2].reserve("shared", 1.0, 50.0, 60) for i in range(200)]
        granted = await asyncio.gather(*calls)
        assert granted.count(True) == 50
        assert await first.spent("shared") == await second.spent("shared") == (0.0, 50.0)
    finally:
        await first.aclose()
        await second.aclose()
        await delete_prefix(prefix)


@pytest.mark.anyio
async def test_settle_releases_the_reservation_and_never_goes_below_zero(
    harness: Harness,
) -> None:
    backend = harness.backend
    assert await backend.spent("new") == (0.0, 0.0)
    assert await backend.reserve("k", 6.0, 10.0, 60) is True
    assert await backend.reserve("k", 5.0, 10.0, 60) is False
    await backend.settle("k", 6.0, 2.5, 60)
    assert await backend.spent("k") == (2.5, 0.0)
    assert await backend.reserve("k", 7.5, 10.0, 60) is True
    await backend.settle("k", 100.0, 0.0, 60)  # releasing more than reserved stops at zero
    assert await backend.spent("k") == (2.5, 0.0)
    await backend.settle("k", 0.0, 1.25, 60)  # spend without a reservation still counts
    assert await backend.spent("k") == (3.75, 0.0)


@pytest.mark.anyio
async def test_budget_key_expires_after_ttl(harness: Harness) -> None:
    backend = harness.backend
    assert await backend.reserve("k", 4.0, 5.0, 0.2) is True
    await backend.settle("k", 4.0, 4.0, 0.2)
    assert await backend.spent("k") == (4.0, 0.0)
    await harness.sleep(0.3)
    assert await backend.spent("k") == (0.0, 0.0)
    assert await backend.reserve("k", 4.0, 5.0, 0.2) is True


# --- windows ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_window_refuses_beyond_limit_and_resets(harness: Harness) -> None:
    backend, window = harness.backend, 1.0
    await harness.fresh_window(window, need=0.8)
    results = [await backend.window_take("rpm", 1, 5, window) for _ in range(6)]
    assert [r.used for r in results] == [1, 2, 3, 4, 5, 5]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    refused = results[-1]
    assert refused.limit == 5
    assert 0.0 < refused.reset_after <= window
    await harness.next_window(window)
    fresh = await backend.window_take("rpm", 1, 5, window)
    assert (fresh.allowed, fresh.used, fresh.limit) == (True, 1, 5)
    assert fresh.reset_after == pytest.approx(window - 0.01, abs=0.2)


@pytest.mark.anyio
async def test_window_amounts_and_adjust(harness: Harness) -> None:
    backend, window = harness.backend, 60.0
    await harness.fresh_window(window, need=5)
    assert (await backend.window_take("tpm", 300, 1000, window)).used == 300
    await backend.window_adjust("tpm", 500, window)  # the call used more than estimated
    refused = await backend.window_take("tpm", 300, 1000, window)
    assert (refused.allowed, refused.used) == (False, 800)
    await backend.window_adjust("tpm", -700, window)  # ... or less
    assert (await backend.window_take("tpm", 300, 1000, window)).used == 400
    await backend.window_adjust("tpm", -10_000, window)
    assert (await backend.window_take("tpm", 1, 1000, window)).used == 1
    assert (await backend.window_take("tpm", 999, 1000, window)).allowed is True
    assert (await backend.window_take("tpm", 1, 1000, window)).allowed is False


@pytest.mark.anyio
async def test_concurrent_window_takes_stop_at_the_limit(harness: Harness) -> None:
    backend = harness.backend
    await harness.fresh_window(60.0, need=5)
    results = await asyncio.gather(*(backend.window_take("rpm", 1, 60, 60.0) for _ in range(200)))
    assert sum(r.allowed for r in results) == 60
    assert max(r.used for r in results) == 60


@pytest.mark.anyio
async def test_window_must_be_at_least_a_millisecond(harness: Harness) -> None:
    with pytest.raises(ValueError, match="window"):
        await harness.backend.window_take("rpm", 1, 5, 0.0)


_CHILD = """
import asyncio, sys
from thanos_asgi.governance.state._redis import RedisBackend

async def main(url: str, prefix: str) -> None:
    backend = RedisBackend(url, key_prefix=prefix)
    await backend.spent("warm-up")
    print("ready", flush=True)
    sys.stdin.readline()
    takes = [backend.window_take("rpm", 1, 60, 60.0) for _ in range(100)]
    results = await asyncio.gather(*takes)
    print(sum(r.allowed for r in results), flush=True)
    await backend.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def sync_prefix() -> Iterator[str]:
    prefix = new_prefix()
    yield prefix
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_two_processes_share_one_window(sync_prefix: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        seconds, _ = client.time()
    if 60 - seconds % 60 < 10:  # keep both processes inside one fixed minute window
        time.sleep(60 - seconds % 60 + 0.1)
    argv = [sys.executable, "-c", _CHILD, REDIS_URL, sync_prefix]
    pipe = subprocess.PIPE
    children = [
        subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, text=True) for _ in range(2)
    ]
    for child in children:  # both connected and waiting: start them together
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready", child.communicate(timeout=30)[1]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    allowed = []
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        allowed.append(int(out))
    assert sum(allowed) == 60
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.hget(f"{sync_prefix}window:rpm", "n") == b"60"


# --- records ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_json_round_trip_with_ttl(harness: Harness) -> None:
    backend = harness.backend
    record = {"state": "open", "failures": 3, "opened_at": 1700000000.5, "tags": ["a"]}
    assert await backend.get_json("breaker") is None
    await backend.set_json("breaker", record, 0.2)
    await backend.set_json("forever", [1, "two", None], None)
    assert await backend.get_json("breaker") == record
    await harness.sleep(0.3)
    assert await backend.get_json("breaker") is None
    assert await backend.get_json("forever") == [1, "two", None]


@pytest.mark.anyio
async def test_memory_records_are_copies() -> None:
    backend = MemoryBackend()
    record: dict[str, Any] = {"failures": 1}
    await backend.set_json("breaker", record, None)
    record["failures"] = 2
    assert await backend.get_json("breaker") == {"failures": 1}


# --- an unreachable Redis -----------------------------------------------------------------


def every_operation(backend: StateBackend) -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: backend.window_take("rpm", 1, 60, 60.0),
        lambda: backend.window_adjust("tpm", 5, 60.0),
        lambda: backend.reserve("budget", 1.0, 50.0, 60),
        lambda: backend.settle("budget", 1.0, 0.9, 60),
        lambda: backend.spent("budget"),
        lambda: backend.get_json("breaker"),
        lambda: backend.set_json("breaker", {"state": "open"}, 30),
    ]


@pytest.mark.anyio
async def test_unreachable_redis_fails_closed_fast_without_the_password() -> None:
    backend = RedisBackend(DOWN_URL)
    try:
        for operation in every_operation(backend):
            started = time.monotonic()
            with pytest.raises(StateUnavailable) as caught:
                await operation()
            assert time.monotonic() - started < 2.0
            error = caught.value
            assert (error.status, error.type, error.code) == (503, *["state_unavailable"] * 2)
            assert "the shared state store (redis://127.0.0.1:1/0) is unreachable" in str(error)
            assert "s3cretpw" not in str(error)
            assert error.__cause__ is None and error.__suppress_context__
    finally:
        await backend.aclose()


@pytest.mark.anyio
async def test_wrong_credentials_fail_closed_without_the_password() -> None:
    backend = RedisBackend(REDIS_URL.replace("://", "://nobody:s3cretpw@", 1))
    try:
        with pytest.raises(StateUnavailable, match="refuses the credentials") as caught:
            await backend.spent("budget")
        assert "s3cretpw" not in str(caught.value)
    finally:
        await backend.aclose()


@pytest.mark.anyio
async def test_unreachable_redis_with_fail_open_allows_and_drops_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = RedisBackend(DOWN_URL, fail_open=True)
    caplog.set_level(logging.WARNING, logger="thanos_asgi.governance.state")
    try:
        assert await backend.window_take("rpm", 1, 60, 60.0) == WindowResult(True, 0, 60, 0.0)
        assert await backend.reserve("budget", 1.0, 50.0, 60) is True
        assert await backend.spent("budget") == (0.0, 0.0)
        assert await backend.get_json("breaker") is None
        await backend.window_adjust("tpm", 5, 60.0)
        await backend.settle("budget", 1.0, 0.9, 60)
        await backend.set_json("breaker", {"state": "open"}, 30)
    finally:
        await backend.aclose()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4  # one for the outage, one per dropped write
    assert "allowing requests unmetered" in messages[0]
    assert [m.rsplit("fail_open: ", 1)[1] for m in messages[1:]] == [
        "window_adjust dropped",
        "settle dropped",
        "set_json dropped",
    ]
    assert not any("s3cretpw" in m for m in messages)


# --- open_backend -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_backend_memory_by_default() -> None:
    backend = open_backend(StateConfig())
    assert isinstance(backend, MemoryBackend)
    await backend.aclose()


@pytest.mark.anyio
async def test_open_backend_redis(prefix: str) -> None:
    backend = open_backend(StateConfig(backend="redis", url=REDIS_URL))
    assert isinstance(backend, RedisBackend)
    try:
        assert (await backend.window_take(f"{prefix}rpm", 1, 5, 60.0)).allowed is True
    finally:
        await backend.aclose()
        async with aioredis.Redis.from_url(REDIS_URL) as client:
            await client.delete(f"thanos:window:{prefix}rpm")


@pytest.mark.parametrize("url", [None, ""])
def test_open_backend_redis_needs_a_url(url: str | None) -> None:
    with pytest.raises(ConfigError, match=r"state\.url: .*needs a url"):
        open_backend(StateConfig(backend="redis", url=url))


def test_open_backend_rejects_a_url_redis_cannot_use() -> None:
    with pytest.raises(ConfigError, match=r"state\.url: not a usable Redis URL") as caught:
        open_backend(StateConfig(backend="redis", url="http://:s3cretpw@example.com"))
    assert "s3cretpw" not in str(caught.value)


def test_open_backend_says_how_to_install_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    monkeypatch.delitem(sys.modules, "thanos_asgi.governance.state._redis")
    with pytest.raises(ConfigError, match=r"thanos-asgi\[redis\]"):
        open_backend(StateConfig(backend="redis", url=REDIS_URL))


def test_importing_state_does_not_import_redis() -> None:
    code = "import sys, thanos_asgi.governance.state; print('redis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
