"""The response cache in memory: real gateways over loopback, a real upstream, official SDKs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.helpers import config
from tests.servers import Upstream, running
from thanos_asgi import Gateway, build_app
from thanos_asgi.governance.state import MemoryBackend

pytestmark = pytest.mark.anyio
KEY_A, KEY_B = "thk_cache-key-a-0123456789abcdef", "thk_cache-key-b-0123456789abcdef"


def settings(upstream: str, cache: str = "", extra: str = "") -> str:
    return (
        f"[cache]\nenabled = true\n{cache}\n"
        f'[providers.local]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
        'models = ["m", "cut", "status-500", "delay-300"]\n'
        "[routing]\nmax_retries = 0\n" + extra
    )


@asynccontextmanager
async def serving(
    text: str, state: MemoryBackend | None = None
) -> AsyncIterator[tuple[str, Gateway]]:
    gateway = Gateway(config(text), state=state)
    async with gateway, running(build_app(gateway)) as url:
        yield url, gateway


def ask(text: str = "hello", model: str = "local/m", **more: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **more}


async def post(url: str, body: dict[str, object], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)


async def test_identical_requests_reach_the_provider_once() -> None:
    upstream = Upstream()
    async with running(upstream) as up, serving(settings(up)) as (url, _):
        answers = [await post(url, ask()) for _ in range(3)]
    assert len(upstream.bodies) == 1
    assert [a.headers["x-thanos-cache"] for a in answers] == ["miss", "hit", "hit"]
    texts = {a.json()["choices"][0]["message"]["content"] for a in answers}
    assert texts == {"echo: hello"}
    assert answers[2].headers["x-thanos-cost-usd"] == "0.00000000"


async def test_a_hit_is_a_ledger_row_marked_cached_at_no_cost(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    extra = f'[cost]\nledger_path = "{ledger}"\n'
    extra += "[cost.providers.local]\ninput_cost_per_1m_tokens = 1000\n"
    extra += "output_cost_per_1m_tokens = 2000\n"
    upstream = Upstream()
    async with running(upstream) as up, serving(settings(up) + extra) as (url, gateway):
        for _ in range(2):
            assert (await post(url, ask())).status_code == 200
        assert gateway.ledger is not None
        gateway.ledger.flush()
    with sqlite3.connect(ledger) as db:
        rows = db.execute("SELECT cached, cost_usd, prompt_tokens FROM requests ORDER BY ts")
        found = rows.fetchall()
    assert len(found) == 2
    assert found[0][0] == 0 and found[0][1] > 0
    assert found[1] == (1, 0.0, 0)


async def test_stream_and_whole_answers_share_an_entry_through_the_sdks() -> None:
    upstream = Upstream()
    async with (
        running(upstream) as up,
        serving(settings(up)) as (url, _),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as messages,
    ):
        whole = await client.chat.completions.create(
            model="local/m", messages=[{"role": "user", "content": "one two three"}]
        )
        stream = await client.chat.completions.create(
            model="local/m",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            parts += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        async with messages.messages.stream(
            model="local/m",
            max_tokens=100,
            messages=[{"role": "user", "content": "a stream first"}],
        ) as live:
            first = await live.get_final_message()
        replayed = await messages.messages.create(
            model="local/m",
            max_tokens=100,
            messages=[{"role": "user", "content": "a stream first"}],
        )
        async with messages.messages.stream(
            model="local/m",
            max_tokens=100,
            messages=[{"role": "user", "content": "a stream first"}],
        ) as again:
            texts = [text async for text in again.text_stream]
            last = await again.get_final_message()
    assert whole.choices[0].message.content == "echo: one two three"
    assert "".join(parts) == "echo: one two three"
    assert usage is not None and usage.completion_tokens == 7
    assert len(upstream.bodies) == 2  # one per prompt, whatever the dialect or stream flag
    live_text = first.content[0].text  # type: ignore[union-attr]
    assert live_text == "echo:astreamfirst"  # (the fake upstream streams words without spaces)
    assert replayed.content[0].text == live_text  # type: ignore[union-attr]
    assert "".join(texts) == live_text
    assert last.usage.output_tokens == first.usage.output_tokens == 7


async def test_entries_expire_after_their_ttl_and_a_task_table_overrides_it() -> None:
    extra = '[ai]\nmode = "work"\n[routing.work]\n'
    extra += 'review = { provider = "local", cache_ttl_hours = 0.0001 }\n'  # 0.36 s
    upstream = Upstream()
    text = settings(upstream="{up}", cache="ttl_seconds = 1.0", extra=extra)
    async with running(upstream) as up, serving(text.replace("{up}", up)) as (url, _):
        await post(url, ask("ttl"))
        assert (await post(url, ask("ttl"))).headers["x-thanos-cache"] == "hit"
        await asyncio.sleep(1.1)
        assert (await post(url, ask("ttl"))).headers["x-thanos-cache"] == "miss"
        assert len(upstream.bodies) == 2
        await post(url, ask("task"), **{"x-thanos-task": "review"})
        await asyncio.sleep(0.5)  # past the task's 0.36 s, within the 1 s default
        again = await post(url, ask("task"), **{"x-thanos-task": "review"})
        assert again.headers["x-thanos-cache"] == "miss"
        assert len(upstream.bodies) == 4


async def test_keys_do_not_share_entries_unless_the_scope_is_global() -> None:
    keys = (
        f'[[server.keys]]\nid = "a"\nkey = "{KEY_A}"\n[[server.keys]]\nid = "b"\nkey = "{KEY_B}"\n'
    )
    for scope, calls in (("key", 2), ("global", 1)):
        upstream = Upstream()
        text = settings("{up}", cache=f'scope = "{scope}"', extra=keys)
        async with running(upstream) as up, serving(text.replace("{up}", up)) as (url, _):
            one = await post(url, ask(), authorization=f"Bearer {KEY_A}")
            two = await post(url, ask(), authorization=f"Bearer {KEY_B}")
            three = await post(url, ask(), authorization=f"Bearer {KEY_B}")
        assert len(upstream.bodies) == calls, scope
        assert one.headers["x-thanos-cache"] == "miss"
        assert two.headers["x-thanos-cache"] == ("miss" if calls == 2 else "hit")
        assert three.headers["x-thanos-cache"] == "hit"


async def test_no_cache_skips_the_lookup_and_no_store_the_storing() -> None:
    upstream = Upstream()
    async with running(upstream) as up, serving(settings(up)) as (url, _):
        kept = await post(url, ask("fresh"), **{"cache-control": "no-cache"})
        fresh = await post(url, ask("fresh"), **{"cache-control": "no-cache"})
        hit = await post(url, ask("fresh"))
        await post(url, ask("secret"), **{"cache-control": "no-store"})
        after = await post(url, ask("secret"))
    assert [kept.headers["x-thanos-cache"], fresh.headers["x-thanos-cache"]] == ["bypass"] * 2
    assert hit.headers["x-thanos-cache"] == "hit"
    assert after.headers["x-thanos-cache"] == "miss"
    assert len(upstream.bodies) == 4


async def test_deterministic_mode_bypasses_other_requests() -> None:
    upstream = Upstream()
    text = settings("{up}", cache='when = "deterministic"')
    async with running(upstream) as up, serving(text.replace("{up}", up)) as (url, _):
        loose = [await post(url, ask(temperature=0.7)) for _ in range(2)]
        fixed = [await post(url, ask(temperature=0)) for _ in range(2)]
        seeded = [await post(url, ask(seed=7)) for _ in range(2)]
    assert [r.headers["x-thanos-cache"] for r in loose] == ["bypass", "bypass"]
    assert [r.headers["x-thanos-cache"] for r in fixed] == ["miss", "hit"]
    assert [r.headers["x-thanos-cache"] for r in seeded] == ["miss", "hit"]
    assert len(upstream.bodies) == 4


async def test_errors_and_cut_streams_are_never_stored() -> None:
    upstream = Upstream()
    async with (
        running(upstream) as up,
        serving(settings(up)) as (url, _),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        errors = [await post(url, ask(model="local/status-500")) for _ in range(2)]
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="local/cut", messages=[{"role": "user", "content": "x"}], stream=True
            )
            with pytest.raises(openai.APIError):
                async for _chunk in stream:
                    pass
        whole = await post(url, ask("x", model="local/cut"))
    assert [e.status_code for e in errors] == [500, 500] or all(
        e.status_code >= 500 for e in errors
    )
    assert upstream.seen["status-500"] == 2
    assert upstream.seen["cut"] == 3  # two cut streams, then a whole answer: none was a hit
    assert whole.headers["x-thanos-cache"] == "miss"


async def test_fifty_concurrent_identical_requests_make_one_provider_call() -> None:
    upstream = Upstream()
    async with (
        running(upstream) as up,
        serving(settings(up)) as (url, _),
        httpx.AsyncClient(timeout=30) as http,
    ):

        async def one(stream: bool) -> str:
            body = ask("together", model="local/delay-300", stream=stream)
            async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                data = (await r.aread()).decode()
                assert r.status_code == 200, data
                return r.headers["x-thanos-cache"] + ("" if "echo: together" in data else "!")

        outcomes = await asyncio.gather(*(one(i % 2 == 1) for i in range(50)))
    assert upstream.seen["delay-300"] == 1
    assert sorted(outcomes).count("hit") == 49 and outcomes.count("miss") == 1


async def test_metrics_count_hits_misses_and_bytes() -> None:
    upstream = Upstream()
    async with running(upstream) as up, serving(settings(up)) as (url, _):
        for _ in range(3):
            await post(url, ask())
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{url}/metrics")).text
    assert "thanos_cache_hits_total 2.0" in text
    assert "thanos_cache_misses_total 1.0" in text
    assert "thanos_cache_evictions_total 0.0" in text
    size = next(line for line in text.splitlines() if line.startswith("thanos_cache_bytes "))
    assert float(size.split()[1]) > 0


async def test_one_entry_replays_through_every_dialect() -> None:
    upstream = Upstream()
    text = "echo: every dialect"
    async with (
        running(upstream) as up,
        serving(settings(up)) as (url, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        assert (await post(url, ask("every dialect"))).headers["x-thanos-cache"] == "miss"
        user = [{"role": "user", "content": "every dialect"}]
        answers = {
            "responses": await http.post(
                f"{url}/v1/responses",
                json={"model": "local/m", "input": "every dialect", "stream": True},
            ),
            "gemini": await http.post(
                f"{url}/v1beta/models/local/m:streamGenerateContent",
                params={"alt": "sse"},
                json={"contents": [{"role": "user", "parts": [{"text": "every dialect"}]}]},
            ),
            "ollama": await http.post(
                f"{url}/api/chat", json={"model": "local/m", "messages": user, "stream": True}
            ),
            "completions": await http.post(
                f"{url}/v1/completions",
                json={"model": "local/m", "prompt": "every dialect", "stream": True},
            ),
        }
    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.text)
        assert answer.headers["x-thanos-cache"] == "hit", name
        assert text in answer.text or text.replace(" ", "\\u0020") in answer.text, name
    assert len(upstream.bodies) == 1  # (a legacy prompt is the same canonical request)


async def test_hits_count_against_rpm_but_not_tpm() -> None:
    keys = f'[[server.keys]]\nid = "a"\nkey = "{KEY_A}"\nrpm = 3\ntpm = 1000\n'
    upstream = Upstream()
    text = settings("{up}", extra=keys)
    still = MemoryBackend(clock=lambda: 30.0)  # mid-window: the four fall in one minute
    async with running(upstream) as up, serving(text.replace("{up}", up), still) as (url, gw):
        auth = {"authorization": f"Bearer {KEY_A}"}
        answers = [await post(url, ask(max_tokens=300), **auth) for _ in range(4)]
        window = await gw.state.window_take("tpm:key:a", 0, 1000, 60.0)
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers.get("x-thanos-cache") for a in answers[:3]] == ["miss", "hit", "hit"]
    assert window.used == 12  # the miss's real usage (5 + 7); the hits took no tokens
    assert len(upstream.bodies) == 1
