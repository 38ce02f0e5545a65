"""No setting is accepted and then ignored: `[models_dev]` refreshes prices, `[health.*]
check_auth` checks credentials, and `cache_ttl_hours` (response cache off) is warned about."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from tests.servers import running
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import load_config, parse_config
from thanos_asgi.frontends.asgi import Receive, Scope, Send
from thanos_asgi.testing import Answer, FakeUpstream, Script

pytestmark = pytest.mark.anyio
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seed-configs"
DOC = {  # models.dev's api.json shape, with a price no real model has
    "openai": {
        "models": {
            "gpt-4o-mini": {"cost": {"input": 1000, "output": 2000}, "last_updated": "2031-01-02"}
        }
    }
}
CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def models_dev(scope: Scope, receive: Receive, send: Send) -> None:
    """A loopback stand-in for https://models.dev/api.json."""
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(DOC).encode()})


async def cost_of_a_chat(text: str) -> tuple[Gateway, str]:
    """Cost header of one chat (5 prompt, 7 completion tokens) once prices are as they settle."""
    fake = FakeUpstream(Script({"gpt-4o-mini": Answer("hi", usage=(5, 7))}))
    config = parse_config(text, source="test", env={})
    async with Gateway(config, transports={"openai": fake}) as gateway:
        for _ in range(200):  # the refresh runs in the background from the start
            if gateway.price_refresher.book.table.as_of == "2031-01-02":
                break
            await asyncio.sleep(0.01)
        transport = httpx.ASGITransport(app=build_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/v1/chat/completions", json=CHAT)
    return gateway, response.headers["x-thanos-cost-usd"]


async def test_models_dev_prices_replace_the_bundled_ones() -> None:
    async with running(models_dev) as url:
        text = '[providers.openai]\napi_key = "sk-t"\n[models_dev]\nenabled = true\n'
        text += f'url = "{url}/api.json"\n'
        _, cost = await cost_of_a_chat(text)
    assert cost == f"{(5 * 1000 + 7 * 2000) / 1e6:.8f}"


async def test_models_dev_from_a_local_file_and_not_when_disabled(tmp_path: Path) -> None:
    path = tmp_path / "api.json"
    path.write_text(json.dumps(DOC))
    base = '[providers.openai]\napi_key = "sk-t"\n[models_dev]\n'
    _, from_file = await cost_of_a_chat(base + f'enabled = true\nurl = "{path}"\n')
    gateway, bundled = await cost_of_a_chat(base + f'enabled = false\nurl = "{path}"\n')
    assert from_file == "0.01900000"
    assert gateway.price_refresher.book.table.as_of != "2031-01-02"
    assert 0 < float(bundled) < 0.0001  # the bundled snapshot's price


async def test_a_failed_refresh_keeps_the_prices_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = f'[models_dev]\nenabled = true\nurl = "{tmp_path / "missing.json"}"\n'
    config = parse_config(text, source="test", env={})
    async with Gateway(config) as gateway:
        before = gateway.price_refresher.book.table
        assert not await gateway.price_refresher.refresh_once()
    assert gateway.price_refresher.book.table is before
    assert "could not refresh model prices" in caplog.text


async def test_check_auth_fails_an_instance_without_credentials() -> None:
    health = "[health]\nauto_disable_on_failure = true\ncheck_interval_seconds = 3600\n"
    health += "[health.openai]\ncheck_auth = true\n"
    for key, passes in (("", False), ('api_key = "sk-test-0123456789"\n', True)):
        fake = FakeUpstream()
        config = parse_config(f"[providers.openai]\n{key}{health}", source="t", env={})
        async with Gateway(config, transports={"openai": fake}) as gateway:
            assert await gateway.monitor.check("openai") is passes
            breaker = gateway.health["openai"].breaker
            assert breaker.disabled is not passes
            if not passes:
                assert breaker.last_error is not None and "no API key" in breaker.last_error
        assert fake.requests == []  # credentials are checked without a request


def test_cache_ttl_hours_loads_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="thanos_asgi.config"):
        config = load_config(SEEDS / "complete-hybrid.toml", env={})
    warnings = [r.getMessage() for r in caplog.records if r.name == "thanos_asgi.config"]
    assert len(warnings) == 1
    assert "semantic_search.cache_ttl_hours has no effect" in warnings[0]
    assert "the response cache is off" in warnings[0] and config.routing.modes
    caplog.clear()
    parse_config('[routing.x]\nquick = "ollama"\n', source="t", env={})
    assert not [r for r in caplog.records if r.name == "thanos_asgi.config"]
