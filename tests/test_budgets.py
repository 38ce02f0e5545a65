"""Budgets, cost and the usage ledger: they hold under concurrency, in memory and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.helpers import clear_of_the_minute, client_for, config
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.config import StateConfig
from thanos_asgi.governance.ledger import Ledger
from thanos_asgi.governance.state import open_backend
from thanos_asgi.governance.state._redis import RedisBackend
from thanos_asgi.types import ChatRequest, Message

pytestmark = pytest.mark.anyio
REDIS = "redis://127.0.0.1:6379/0"

# $1 per output token, inputs free: a request with max_tokens = 1 costs at most $1 -- and the
# upstream below honours max_tokens, so the worst case is also the real cost.
PRICED = """
[cost]
monthly_budget_usd = {budget}
warn_at_percent = 50
pause_at_percent = 100

[cost.providers.paid]
input_cost_per_1m_tokens = 0
output_cost_per_1m_tokens = 1000000

[providers.paid]
kind = "openai-compatible"
base_url = "http://paid.test/v1"
models = ["m"]

[routing]
max_retries = 0
"""


async def metered(request: httpx.Request) -> httpx.Response:
    if request.url.host == "ollama.test":
        done = {
            "model": "llama3",
            "message": {"role": "assistant", "content": "free"},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 3,
            "eval_count": 2,
        }
        return httpx.Response(200, json=done)
    body = json.loads(request.content)
    out = body.get("max_tokens") or body.get("max_completion_tokens") or 1
    await asyncio.sleep(0.01)
    message = {"role": "assistant", "content": "x" * out}
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": out, "total_tokens": 4 + out},
        },
    )


async def make(text: str, backend: str, tmp_path: Path | None = None) -> Gateway:
    cfg = config(text)
    prefix = f"thanos-test-{uuid.uuid4().hex}:"
    state = open_backend(StateConfig())
    if backend == "redis":
        state = RedisBackend(REDIS, key_prefix=prefix)
    ledger = Ledger(tmp_path / "usage.db") if tmp_path else None
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(metered)))
    return Gateway(cfg, transport=transport, state=state, ledger=ledger)


async def ask(http: Any, model: str = "m", **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return await http.post("/v1/chat/completions", json={**body, **extra})


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_200_concurrent_requests_never_overspend_a_budget_of_50(backend: str) -> None:
    gw = await make(PRICED.format(budget=50), backend)
    async with client_for(build_app(gw)) as http:
        responses = await asyncio.gather(*(ask(http) for _ in range(200)))
    await gw.accounting.drain()
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 150
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "budget_exceeded"
    spent, reserved = await gw.state.spent(_month_key())
    assert spent == pytest.approx(50.0) and reserved == pytest.approx(0.0)
    await gw.aclose()


def _month_key() -> str:
    import time

    return f"budget:{time.strftime('%Y-%m', time.gmtime())}:global"


async def test_paused_budget_keeps_free_providers_working() -> None:
    text = PRICED.format(budget=2).replace(
        "[routing]\nmax_retries = 0",
        '[routing]\nmax_retries = 0\nfallback_chain = ["paid", "ollama"]',
    )
    text += '\n[providers.ollama]\nbase_url = "http://ollama.test"\nmodel = "llama3"\n'
    gw = await make(text, "memory")
    async with client_for(build_app(gw)) as http:
        first = [await ask(http) for _ in range(4)]
    assert [r.headers["x-thanos-provider"] for r in first] == ["paid", "paid", "ollama", "ollama"]
    assert first[2].headers["x-thanos-attempts"] == "paid:budget_exceeded,ollama:ok"
    await gw.aclose()


async def test_cost_header_warning_and_ledger(tmp_path: Path) -> None:
    gw = await make(PRICED.format(budget=4), "memory", tmp_path)
    async with client_for(build_app(gw)) as http:
        one = await ask(http)
        await gw.accounting.drain()
        two = await ask(http)
        usage = await http.get("/v1/usage", params={"group_by": "provider"})
    assert float(one.headers["x-thanos-cost-usd"]) == pytest.approx(1.0)
    assert "x-thanos-budget-warning" not in one.headers
    assert "50%" in two.headers["x-thanos-budget-warning"]
    assert usage.status_code == 200
    rows = usage.json()["data"]
    assert rows[0]["provider"] == "paid" and rows[0]["requests"] == 2
    assert rows[0]["cost_usd"] == pytest.approx(2.0)
    await gw.aclose()
    ids = [row.request_id for row in Ledger(tmp_path / "usage.db").rows()]
    assert ids == [one.headers["x-request-id"], two.headers["x-request-id"]]


async def test_a_finished_requests_row_is_durable_before_its_answer_goes_out(
    tmp_path: Path,
) -> None:
    gw = await make(PRICED.format(budget=1000), "memory", tmp_path)
    assert gw.ledger is not None
    request = ChatRequest(model="m", messages=[Message(role="user", content="hi")], max_tokens=1)
    async with contextlib.AsyncExitStack() as stack:
        enter = stack.enter_async_context
        replies = await asyncio.gather(*(enter(gw.dispatch(request)) for _ in range(3)))
        assert journal_lines(gw.ledger.path) == []  # nothing finished yet, nothing written
        for reply in replies:
            reply.finish()
    lines = journal_lines(gw.ledger.path)  # one append each, before finish returned
    assert [msgspec.json.decode(line)[1] for line in lines] == [r.request_id for r in replies]
    assert len(list(gw.ledger.rows())) == 3
    async with client_for(build_app(gw)) as http:  # a refusal gets its row too
        assert (await ask(http, model="nope")).status_code == 404
    assert [row.status for row in gw.ledger.rows()][-1] == "error:404"
    await gw.aclose()


def journal_lines(ledger: Path) -> list[bytes]:
    return [
        line
        for f in Path(f"{ledger}.journals").glob("*.rows")
        for line in f.read_bytes().splitlines()
    ]


KEYED = """
[[server.keys]]
id = "k"
key = "sk-cancel"
tpm = 100000000
"""


@pytest.mark.parametrize("keyed", [False, True], ids=["reserve", "take_and_reserve"])
async def test_requests_cancelled_while_they_reserve_leave_nothing_reserved(keyed: bool) -> None:
    """A reservation sent to Redis lands even if its request is cancelled before the reply
    (Redis holds it here with CLIENT PAUSE WRITE): it is released once the reply comes, so no
    budget stays held by requests that are gone. With a key's tokens per minute, the tokens
    and the budget are taken in one script (`take_and_reserve`): both come back."""
    import redis.asyncio as aioredis

    gw = await make(PRICED.format(budget=50) + (KEYED if keyed else ""), "redis")
    pauser = aioredis.Redis.from_url(REDIS)
    headers = {"authorization": "Bearer sk-cancel"} if keyed else {}
    if keyed:  # the tokens window (Redis `TIME`) must not roll over between its two reads
        await clear_of_the_minute(5)
    async with client_for(build_app(gw)) as http:
        http.headers.update(headers)
        assert (await ask(http)).status_code == 200  # (connected, scripts known)
        await gw.accounting.drain()
        first_tokens = (await gw.state.window_take("tpm:key:k", 0, 100000000, 60.0)).used
        await pauser.execute_command("CLIENT", "PAUSE", 400, "WRITE")
        asking = [asyncio.create_task(ask(http)) for _ in range(10)]
        await asyncio.sleep(0.2)  # their reservations are sent, Redis holds them
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
        await asyncio.sleep(0.4)  # the pause ends, the reservations land
        await gw.accounting.drain()
        spent, reserved = await gw.state.spent(_month_key())
        assert reserved == pytest.approx(0.0) and spent == pytest.approx(1.0)
        assert not any(gw.accounting.holds.amounts.values())
        if keyed:
            tokens = await gw.state.window_take("tpm:key:k", 0, 100000000, 60.0)
            assert tokens.used == first_tokens  # the cancelled ones' estimates refunded
    await pauser.aclose()
    await gw.accounting.drain()
    await gw.aclose()
