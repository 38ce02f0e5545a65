"""Credential pools over loopback: rotation, weights, cooldowns, disabling, fallbacks,
shared state across processes, and no key anywhere but upstream."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.pool_upstream import KeyedUpstream
from tests.servers import running
from tests.test_multiprocess import gateway_process
from thanos_asgi import build_app
from thanos_asgi.config import parse_config
from thanos_asgi.core.gateway import Gateway
from thanos_asgi.exceptions import ConfigError

pytestmark = pytest.mark.anyio

KEY_A = "sk-pool-team-a-0123456789abcdefAAAA"
KEY_B = "sk-pool-team-b-0123456789abcdefBBBB"
KEY_C = "sk-pool-team-c-0123456789abcdefCCCC"
KEYS = (KEY_A, KEY_B, KEY_C)
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def pool(upstream: str, strategy: str = "round-robin", weight_b: int = 1, extra: str = "") -> str:
    return (
        f'[providers.openai]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
        f'models = ["m"]\ncredential_strategy = "{strategy}"\n'
        f'[[providers.openai.credentials]]\nid = "team-a"\napi_key = "{KEY_A}"\n'
        f'[[providers.openai.credentials]]\nid = "team-b"\napi_key = "{KEY_B}"\n'
        f"weight = {weight_b}\n" + extra
    )


@asynccontextmanager
async def serving(text: str) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    gateway = Gateway(parse_config(text, source="test.toml", env={}))
    async with running(build_app(gateway)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http, gateway
    await gateway.aclose()


async def chat(http: httpx.AsyncClient, model: str = "m") -> httpx.Response:
    return await http.post("/v1/chat/completions", json={**BODY, "model": model})


def names(upstream: KeyedUpstream) -> list[str]:
    label = {KEY_A: "a", KEY_B: "b", KEY_C: "c"}
    return [label.get(key, key) for key in upstream.seen]


async def test_round_robin_alternates_and_weights_count() -> None:
    fake = KeyedUpstream()
    async with running(fake) as up, serving(pool(up)) as (http, _):
        for _ in range(6):
            assert (await chat(http)).status_code == 200
    assert names(fake) == ["a", "b"] * 3
    weighted = KeyedUpstream()
    async with running(weighted) as up, serving(pool(up, weight_b=2)) as (http, _):
        for _ in range(30):
            response = await chat(http)
            assert response.status_code == 200
    assert Counter(names(weighted)) == {"a": 10, "b": 20}
    assert response.headers["x-thanos-attempts"] in ("openai#team-a:ok", "openai#team-b:ok")


async def test_fill_first_stays_on_one_until_it_cools() -> None:
    fake = KeyedUpstream()
    async with running(fake) as up, serving(pool(up, "fill-first")) as (http, _):
        for _ in range(3):
            await chat(http)
        fake.answers[KEY_A] = (429, {"retry-after": "30"})
        rotated = await chat(http)
        for _ in range(3):
            await chat(http)
    assert names(fake) == ["a", "a", "a", "a", "b", "b", "b", "b"]
    assert rotated.status_code == 200
    assert rotated.headers["x-thanos-attempts"] == "openai#team-a:429,openai#team-b:ok"


async def test_a_retry_after_sends_the_next_traffic_to_the_others_only() -> None:
    fake = KeyedUpstream()
    extra = f'[[providers.openai.credentials]]\nid = "team-c"\napi_key = "{KEY_C}"\n'
    async with running(fake) as up, serving(pool(up, extra=extra)) as (http, gateway):
        fake.answers[KEY_A] = (429, {"retry-after": "30"})
        first = await chat(http)
        fake.answers.pop(KEY_A)  # it would answer now, but it is cooling for 30 s
        for _ in range(10):
            assert (await chat(http)).status_code == 200
        states = {s["id"]: s for s in gateway.status()["openai"]["credentials"]}
    assert first.headers["x-thanos-attempts"] == "openai#team-a:429,openai#team-b:ok"
    assert names(fake)[2:].count("a") == 0 and set(names(fake)[2:]) == {"b", "c"}
    assert states["team-a"]["state"] == "cooling"
    assert 25 < states["team-a"]["cooling_until"] - __import__("time").time() <= 30
    assert states["team-b"]["state"] == "ok"


async def test_a_short_reset_brings_the_key_back() -> None:
    fake = KeyedUpstream()
    async with running(fake) as up, serving(pool(up, "fill-first")) as (http, _):
        fake.answers[KEY_A] = (429, {"x-ratelimit-reset-requests": "300ms"})
        await chat(http)
        fake.answers.pop(KEY_A)
        await chat(http)
        await asyncio.sleep(0.4)
        await chat(http)
    assert names(fake) == ["a", "b", "b", "a"]


async def test_all_cooling_falls_back_to_the_next_instance() -> None:
    fake, backup = KeyedUpstream(), KeyedUpstream()
    async with running(fake) as up, running(backup) as other:
        extra = (
            f'[providers.backup]\nkind = "openai-compatible"\nbase_url = "{other}/v1"\n'
            'models = ["m"]\napi_key = "sk-backup-key-0123456789abcdef"\n'
            '[routing]\nfallback_chain = ["openai", "backup"]\n'
        )
        async with serving(pool(up, extra=extra)) as (http, _):
            fake.answers[KEY_A] = (429, {"retry-after": "20"})
            fake.answers[KEY_B] = (429, {"retry-after": "40"})
            first = await chat(http)
            second = await chat(http)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-thanos-attempts"] == ("openai#team-a:429,openai#team-b:429,backup:ok")
    assert second.headers["x-thanos-attempts"] == "openai:credentials_cooling,backup:ok"
    assert len(fake.seen) == 2 and len(backup.seen) == 2


async def test_all_cooling_and_nothing_else_is_429_with_the_earliest_reset() -> None:
    fake = KeyedUpstream()
    async with running(fake) as up, serving(pool(up)) as (http, _):
        fake.answers[KEY_A] = (429, {"retry-after": "20"})
        fake.answers[KEY_B] = (429, {"retry-after": "40"})
        first = await chat(http)
        second = await chat(http)
        anthropic = await http.post(
            "/v1/messages",
            json={**BODY, "max_tokens": 10},
            headers={"anthropic-version": "2023-06-01"},
        )
    assert first.status_code == 429
    assert second.status_code == 429
    error = second.json()["error"]
    assert error["code"] == "credentials_cooling" and error["type"] == "rate_limit_error"
    assert 18 <= int(second.headers["retry-after"]) <= 20
    assert second.headers["x-thanos-attempts"] == "openai:credentials_cooling"
    assert anthropic.status_code == 429
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert 18 <= int(anthropic.headers["retry-after"]) <= 20
    assert len(fake.seen) == 2  # nothing was sent while both cooled


async def test_401_disables_one_credential_and_all_disabled_is_503() -> None:
    fake = KeyedUpstream()
    async with running(fake) as up, serving(pool(up)) as (http, gateway):
        fake.answers[KEY_A] = (401, {})
        first = await chat(http)
        for _ in range(4):
            assert (await chat(http)).status_code == 200
        states = {s["id"]: s for s in gateway.status()["openai"]["credentials"]}
        fake.answers[KEY_B] = (403, {})
        refused = await chat(http)
    assert first.status_code == 200
    assert first.headers["x-thanos-attempts"] == "openai#team-a:401,openai#team-b:ok"
    assert names(fake)[1:6] == ["b"] * 5
    assert states["team-a"]["state"] == "disabled"
    assert "rejected the gateway's credentials" in states["team-a"]["last_error"]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_credential"


async def test_least_used_spreads_and_models_restrict_a_key() -> None:
    fake = KeyedUpstream()
    text = (
        pool("UP", "least-used")
        .replace('id = "team-b"\n', 'id = "team-b"\nmodels = ["big-*"]\n')
        .replace('models = ["m"]', 'models = ["m", "big-1"]')
    )
    async with running(fake) as up, serving(text.replace("UP", up)) as (http, _):
        for _ in range(3):
            await chat(http)
        for _ in range(4):
            await chat(http, "big-1")
    assert names(fake) == ["a", "a", "a", "b", "b", "b", "a"]


async def test_two_processes_on_redis_share_cooldowns(tmp_path: Path) -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=5).flushdb()
    fake = KeyedUpstream()
    name = f"pool{uuid.uuid4().hex[:6]}"
    async with running(fake) as up:
        text = pool(up, "fill-first").replace("providers.openai", f"providers.{name}")
        config = tmp_path / "thanos.toml"
        config.write_text('[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:6379/5"\n' + text)
        with (
            gateway_process(config, tmp_path) as (one, _),
            gateway_process(config, tmp_path) as (
                two,
                _,
            ),
        ):
            async with httpx.AsyncClient(timeout=30) as http:
                fake.answers[KEY_A] = (429, {"retry-after": "30"})
                first = await http.post(f"{one}/v1/chat/completions", json=BODY)
                fake.answers.pop(KEY_A)
                second = await http.post(f"{two}/v1/chat/completions", json=BODY)
    assert first.headers["x-thanos-attempts"] == f"{name}#team-a:429,{name}#team-b:ok"
    assert second.headers["x-thanos-attempts"] == f"{name}#team-b:ok"
    assert names(fake) == ["a", "b", "b"]
    redis.Redis(host="127.0.0.1", port=6379, db=5).flushdb()


async def test_no_key_in_logs_metrics_headers_health_or_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = KeyedUpstream()
    ledger = tmp_path / "ledger.db"
    extra = f'[cost]\nledger_path = "{ledger}"\n'
    seen: list[str] = []
    async with running(fake) as up, serving(pool(up, extra=extra)) as (http, _):
        fake.answers[KEY_A] = (429, {"retry-after": "30"})
        for _ in range(3):
            response = await chat(http)
            seen.append(json.dumps(dict(response.headers)) + response.text)
        fake.answers[KEY_B] = (401, {})
        refused = await chat(http)
        seen.append(json.dumps(dict(refused.headers)) + refused.text)
        metrics = (await http.get("/metrics")).text
        health = (await http.get("/health/ready")).text
    rows = sqlite3.connect(ledger).execute("SELECT * FROM requests").fetchall()
    everything = "\n".join([*seen, metrics, health, caplog.text, repr(rows)])
    for key in (KEY_A, KEY_B):
        assert key not in everything and key[-12:] not in everything
    assert 'credential="team-a"' in metrics and 'outcome="429"' in metrics
    assert '"team-a"' in health and '"cooling"' in health
    credentials = [row for row in rows if "team-b" in row]
    assert credentials, rows


def test_pool_config_mistakes_are_refused() -> None:
    base = '[providers.openai]\nkind = "openai-compatible"\nbase_url = "http://x/v1"\n'
    dupe = base + '[[providers.openai.credentials]]\nid = "a"\napi_key = "k1"\n' * 2
    with pytest.raises(ConfigError, match="duplicate credential id 'a'"):
        parse_config(dupe, source="t.toml", env={})
    with pytest.raises(ConfigError, match="empty credential pool"):
        parse_config(base + "api_key = []\n", source="t.toml", env={})
    with pytest.raises(ConfigError, match="empty credential pool"):
        parse_config(base + "credentials = []\n", source="t.toml", env={})
    with pytest.raises(ConfigError, match=r"is its \$\{VAR\} set"):
        parse_config(base + 'api_key = ["${K1}", "${NOPE}"]\n', source="t.toml", env={"K1": "x"})
    short = parse_config(base + 'api_key = ["${K1}", "${K2}"]\n', source="t.toml", env=ENV)
    assert [c.id for c in short.providers["openai"].credentials] == ["key1", "key2"]
    assert short.providers["openai"].api_key is None


ENV = {"K1": KEY_A, "K2": KEY_B}


async def test_a_single_key_keeps_todays_header() -> None:
    fake = KeyedUpstream()
    text = (
        f'[providers.openai]\nkind = "openai-compatible"\nbase_url = "UP/v1"\n'
        f'models = ["m"]\napi_key = "{KEY_A}"\n'
    )
    async with running(fake) as up, serving(text.replace("UP", up)) as (http, gateway):
        response = await chat(http)
        assert "credentials" not in gateway.status()["openai"]
    assert response.headers["x-thanos-attempts"] == "openai:ok"
    assert fake.seen == [KEY_A]


async def test_a_reload_keeps_cooldowns_of_ids_that_still_exist(tmp_path: Path) -> None:
    from thanos_asgi.config import load_config
    from thanos_asgi.frontends.stack import Reloadable

    fake = KeyedUpstream()
    config = tmp_path / "thanos.toml"
    async with running(fake) as up:
        config.write_text(pool(up, "fill-first"))
        app = Reloadable(lambda: load_config(config, env={}), grace=1)
        async with running(app) as url, httpx.AsyncClient(base_url=url) as http:
            fake.answers[KEY_A] = (429, {"retry-after": "30"})
            fake.answers[KEY_B] = (401, {})
            refused = await chat(http)
            fake.answers.clear()
            extra = f'[[providers.openai.credentials]]\nid = "team-c"\napi_key = "{KEY_C}"\n'
            config.write_text(pool(up, "fill-first", extra=extra))
            assert app.reload()
            after = [await chat(http) for _ in range(3)]
            states = {s["id"]: s["state"] for s in app.gateway.status()["openai"]["credentials"]}
            await app.gateway.aclose()
    assert refused.status_code == 429  # one key cooling, one disabled: wait for the first
    assert [r.headers["x-thanos-attempts"] for r in after] == [
        "openai#team-b:ok",  # disabled until the reload, usable again after it
        "openai#team-b:ok",
        "openai#team-b:ok",
    ]
    assert states == {"team-a": "cooling", "team-b": "ok", "team-c": "ok"}


async def test_a_quota_answer_cools_for_the_default_and_no_reset_exceeds_a_day() -> None:
    import time

    fake = KeyedUpstream()
    async with running(fake) as up, serving(pool(up, "fill-first")) as (http, gateway):
        fake.answers[KEY_A] = (402, {})
        fake.answers[KEY_B] = (429, {"retry-after": "99999999"})
        response = await chat(http)
        states = {s["id"]: s for s in gateway.status()["openai"]["credentials"]}
    assert response.status_code == 429
    assert 55 <= int(response.headers["retry-after"]) <= 60  # the earliest: team-a's default
    assert 55 < states["team-a"]["cooling_until"] - time.time() <= 60
    assert 86_000 < states["team-b"]["cooling_until"] - time.time() <= 86_400


async def test_the_admin_api_shows_each_credentials_state_and_no_key(tmp_path: Path) -> None:
    fake = KeyedUpstream()
    admin = "thk_admin-pool-0123456789abcdefghij"
    extra = (
        f'[cost]\nledger_path = "{tmp_path / "usage.db"}"\n'
        f'[[server.keys]]\nid = "admin"\nkey = "{admin}"\nadmin = true\n'
    )
    bearer = {"authorization": f"Bearer {admin}"}
    async with running(fake) as up, serving(pool(up, extra=extra)) as (http, _):
        fake.answers[KEY_A] = (429, {"retry-after": "30"})
        rotated = await http.post("/v1/chat/completions", json=BODY, headers=bearer)
        providers = await http.get("/admin/providers", headers=bearer)
        requests = await http.get("/admin/requests", headers=bearer)
    assert rotated.headers["x-thanos-attempts"] == "openai#team-a:429,openai#team-b:ok"
    found = {p["name"]: p for p in providers.json()["data"]}["openai"]["credentials"]
    states = {c["id"]: c["state"] for c in found}
    assert states == {"team-a": "cooling", "team-b": "ok"}
    assert [row["credential"] for row in requests.json()["data"]] == ["team-b"]
    for key in (KEY_A, KEY_B):
        assert key not in providers.text and key not in requests.text
