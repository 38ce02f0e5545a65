"""The response cache shared through Redis (DB 6) and across `thanos serve` processes, its
memory bound under 10,000 entries, semantic lookups, and its metrics under promtool."""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import redis

from tests.helpers import config, gateway
from tests.servers import Upstream, free_port, running
from tests.test_multiprocess import gateway_process
from tests.upstreams import FakeOpenAI
from thanos_asgi import Gateway, build_app
from thanos_asgi.frontends.asgi import Receive, Scope, Send
from thanos_asgi.governance.cache import MemoryStore
from thanos_asgi.types import ChatRequest, Message

pytestmark = pytest.mark.anyio
REDIS = "redis://127.0.0.1:6379/6"  # this suite's own database, flushed before each test


@pytest.fixture
def clean_redis() -> Iterator[None]:
    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


def shared(upstream: str) -> str:
    return (
        f'[state]\nbackend = "redis"\nurl = "{REDIS}"\n'
        '[cache]\nenabled = true\nbackend = "redis"\n'
        f'[providers.local]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
        'models = ["m"]\n[routing]\nmax_retries = 0\n'
    )


def ask(text: str, model: str = "local/m") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@asynccontextmanager
async def serving(text: str) -> AsyncIterator[tuple[str, Gateway]]:
    gw = Gateway(config(text))
    async with gw, running(build_app(gw)) as url:
        yield url, gw


async def test_two_gateways_share_entries_through_redis(clean_redis: None) -> None:
    upstream = Upstream()
    async with (
        running(upstream) as up,
        serving(shared(up)) as (one, _),
        serving(shared(up)) as (two, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        first = await http.post(f"{one}/v1/chat/completions", json=ask("shared"))
        second = await http.post(f"{two}/v1/chat/completions", json=ask("shared"))
        body = {**ask("shared"), "stream": True}
        streamed = await http.post(f"{two}/v1/chat/completions", json=body)
    assert len(upstream.bodies) == 1
    assert [first.headers["x-thanos-cache"], second.headers["x-thanos-cache"]] == ["miss", "hit"]
    assert second.json()["choices"][0]["message"]["content"] == "echo: shared"
    assert streamed.headers["x-thanos-cache"] == "hit" and "data: [DONE]" in streamed.text
    keys = redis.Redis.from_url(REDIS).keys("thanos:cache:*")
    assert len(keys) == 1 and str(keys[0]).startswith("b'thanos:cache:-:")


async def test_two_serve_processes_share_one_redis_cache(clean_redis: None, tmp_path: Path) -> None:
    upstream = Upstream()
    async with running(upstream) as up:
        path = tmp_path / "thanos.toml"
        path.write_text(shared(up))
        with (
            gateway_process(path, tmp_path) as (one, _),
            gateway_process(path, tmp_path) as (two, _),
        ):
            async with httpx.AsyncClient(timeout=30) as http:
                answers = []
                for url in (one, two, one, two):
                    answers.append(await http.post(f"{url}/v1/chat/completions", json=ask("p")))
    assert len(upstream.bodies) == 1
    assert [a.headers["x-thanos-cache"] for a in answers] == ["miss", "hit", "hit", "hit"]
    assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {"echo: p"}


async def test_the_memory_bound_holds_under_10000_distinct_entries() -> None:
    limit = 1024 * 1024
    text = f"[cache]\nenabled = true\nmax_bytes = {limit}\n"
    gw = gateway(FakeOpenAI(), text + '[providers.openai]\napi_key = "sk-x"\n')
    assert gw.cache is not None
    store = gw.cache.store
    assert isinstance(store, MemoryStore)
    peak = 0
    async with gw:
        for i in range(10_000):
            request = ChatRequest(
                model="openai/gpt-4o-mini", messages=[Message(role="user", content=f"q{i} " * 20)]
            )
            await gw.chat(request)
            peak = max(peak, store.stored_bytes)
        again = await gw.chat(request)  # the last one is still there
    assert peak <= limit
    assert store.evictions > 0 and len(store) < 10_000
    assert gw.cache.misses == 10_000 and gw.cache.hits == 1
    assert again.choices[0].message.content == "echo: " + "q9999 " * 20


def vector(text: str, dims: int = 64) -> list[float]:
    """A deterministic embedding: the text's lowercased words hashed into `dims` counts."""
    counts = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word not in ("user", "system", "assistant"):
            counts[zlib.crc32(word.encode()) % dims] += 1.0
    return counts


async def embedder(scope: Scope, receive: Receive, send: Send) -> None:
    """An OpenAI-compatible embeddings endpoint answering `vector(input)`."""
    assert scope["type"] == "http"
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    body = json.loads(raw)
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [
        {"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(texts)
    ]
    usage = {"prompt_tokens": 8, "total_tokens": 8}
    answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


async def test_semantic_hits_above_the_threshold_and_misses_below(tmp_path: Path) -> None:
    assert math.isclose(
        sum(
            a * b
            for a, b in zip(vector("capital of France"), vector("Capital of france?"), strict=True)
        )
        / sum(a * a for a in vector("capital of France")),
        1.0,
    )
    ledger = tmp_path / "usage.db"
    upstream = Upstream()
    async with running(upstream) as up, running(embedder) as emb:
        text = (
            '[cache]\nenabled = true\n[cache.semantic]\nembedding_model = "emb/embed"\n'
            f'threshold = 0.95\n[cost]\nledger_path = "{ledger}"\n'
            f'[providers.local]\nkind = "openai-compatible"\nbase_url = "{up}/v1"\nmodels = ["m"]\n'
            f'[providers.emb]\nkind = "openai-compatible"\nbase_url = "{emb}/v1"\n'
            'models = ["embed"]\n[routing]\nmax_retries = 0\n'
        )
        async with serving(text) as (url, gw), httpx.AsyncClient(timeout=30) as http:
            chat = f"{url}/v1/chat/completions"
            first = await http.post(chat, json=ask("What is the capital of France?"))
            near = await http.post(chat, json=ask("what is the capital of france"))
            other = await http.post(chat, json=ask("what is the capital of spain"))
            assert gw.ledger is not None
            gw.ledger.flush()
    assert [first.headers["x-thanos-cache"], near.headers["x-thanos-cache"]] == ["miss", "hit"]
    assert near.json()["choices"][0]["message"]["content"] == "echo: What is the capital of France?"
    assert other.headers["x-thanos-cache"] == "miss"  # 5 of 6 words: cosine 0.83 < 0.95
    assert len(upstream.bodies) == 2
    with sqlite3.connect(ledger) as db:
        providers = [row[0] for row in db.execute("SELECT provider FROM requests")]
    assert providers.count("emb") == 3  # every embedding call is accounted


async def test_promtool_accepts_the_cache_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
    upstream = Upstream()
    text = "[cache]\nenabled = true\n"
    text += '[providers.local]\nkind = "openai-compatible"\nbase_url = "UP/v1"\nmodels = ["m"]\n'
    async with (
        running(upstream) as up,
        serving(text.replace("UP", up)) as (url, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        for _ in range(2):
            await http.post(f"{url}/v1/chat/completions", json=ask("metrics"))
        exposition = (await http.get(f"{url}/metrics")).content
    for name in ("hits_total", "misses_total", "bytes", "evictions_total"):
        assert f"thanos_cache_{name}".encode() in exposition
    result = await anyio.run_process([promtool, "check", "metrics"], input=exposition, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr), result.stderr


async def test_an_unreachable_redis_makes_misses_and_never_shows_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "redis-PASSWORD-0123456789"
    upstream = Upstream()
    async with running(upstream) as up:
        text = shared(up).replace(REDIS, f"redis://:{secret}@127.0.0.1:{free_port()}/6")
        text = text.replace('backend = "redis"\nurl', 'backend = "memory"\nurl', 1)
        with caplog.at_level("WARNING"):
            async with serving(text) as (url, _), httpx.AsyncClient(timeout=30) as http:
                answers = [
                    await http.post(f"{url}/v1/chat/completions", json=ask("down"))
                    for _ in range(2)
                ]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.headers["x-thanos-cache"] for a in answers] == ["miss", "miss"]
    assert len(upstream.bodies) == 2
    assert "cache store is unavailable" in caplog.text and secret not in caplog.text
    assert caplog.text.count("cache store is unavailable") == 1  # once per outage
    assert all(secret not in a.text and secret not in str(a.headers) for a in answers)


async def test_a_stream_larger_than_an_entry_is_relayed_whole_and_not_collected(
    clean_redis: None,
) -> None:
    """Redis has no bound of its own: the collector stops at the entry bound (here the
    server's `max_response_bytes`), so an endless stream cannot grow the gateway's memory."""
    upstream = Upstream()
    long = "x" * 4000  # echoed back: a stream of about 4 KB
    async with running(upstream) as up:
        text = shared(up).replace("[state]", "[server]\nmax_response_bytes = 1024\n[state]", 1)
        async with serving(text) as (url, _), httpx.AsyncClient(timeout=30) as http:
            answers = [
                await http.post(f"{url}/v1/chat/completions", json={**ask(long), "stream": True})
                for _ in range(2)
            ]
    assert all(long in a.text and "data: [DONE]" in a.text for a in answers)  # relayed whole
    assert [a.headers["x-thanos-cache"] for a in answers] == ["miss", "miss"]
    assert len(upstream.bodies) == 2
