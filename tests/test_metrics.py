"""GET /metrics: values after real traffic, the circuit gauge, promtool, and contrib/ using them."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import KEY, client_for, openai_compatible, sdk
from tests.upstreams import FakeOpenAI
from thanos_asgi import ChatRequest, Gateway, HttpxTransport, build_app
from thanos_asgi.config import parse_config
from thanos_asgi.core.metrics import CONTENT_TYPE

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hello there"}]
CONTRIB = Path(__file__).resolve().parents[1] / "contrib"

CONFIG = f"""
[routing]
max_retries = 1
retry_backoff_ms = 1

[providers.openai]
api_key = "{KEY}"
model = "gpt-4o-mini"
base_url = "http://openai.test/v1"

{openai_compatible("down", "http://down.test", "m")}
{openai_compatible("spare", "http://spare.test", "m")}
{openai_compatible("flaky", "http://flaky.test", "f")}"""


def down(request: httpx.Request) -> httpx.Response:
    error = {"error": {"message": "down", "type": "server_error", "code": None}}
    return httpx.Response(503, json=error)


class Flaky(FakeOpenAI):
    """Fails its first request with 503, then answers."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.requests:
            self.requests.append(request)
            return down(request)
        return await super().__call__(request)


def transport(handler: Callable[..., Any]) -> HttpxTransport:
    return HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def make_gateway(text: str = CONFIG) -> Gateway:
    handlers = {"openai": FakeOpenAI(), "down": down, "spare": FakeOpenAI(), "flaky": Flaky()}
    transports = {name: transport(handler) for name, handler in handlers.items()}
    return Gateway(parse_config(text, source="metrics.toml", env={}), transports=transports)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def traffic(gw: Gateway) -> None:
    """One of each: answer, stream, upstream error, fallback, retry."""
    client = sdk(build_app(gw))
    await client.chat.completions.create(model="openai/gpt-4o-mini", messages=HI)
    stream = await client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert len([chunk async for chunk in stream]) > 3
    with pytest.raises(Exception, match="failing with 500"):
        await client.chat.completions.create(model="openai/fail-500", messages=HI)
    raw = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert raw.headers["x-thanos-attempts"] == "down:503,spare:ok"
    raw = await client.chat.completions.with_raw_response.create(model="f", messages=HI)
    assert raw.headers["x-thanos-attempts"] == "flaky:503,flaky:ok"


async def scrape(gw: Gateway) -> str:
    response = await client_for(build_app(gw)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    return response.text


async def test_metrics_count_answers_streams_errors_fallbacks_and_retries() -> None:
    gw = make_gateway()
    await traffic(gw)
    found = samples(await scrape(gw))
    gpt = {"provider": "openai", "model": "gpt-4o-mini"}
    assert value(found, "thanos_requests_total", status="ok", **gpt) == 2
    assert value(found, "thanos_requests_total", provider="openai", model="none", status="5xx") == 1
    assert value(found, "thanos_requests_total", provider="spare", model="m", status="ok") == 1
    assert value(found, "thanos_requests_total", provider="flaky", model="f", status="ok") == 1
    assert value(found, "thanos_request_duration_seconds_count", **gpt) == 2
    assert value(found, "thanos_request_duration_seconds_bucket", le="+Inf", **gpt) == 2
    assert 0 < value(found, "thanos_request_duration_seconds_sum", **gpt) < 5
    assert value(found, "thanos_time_to_first_token_seconds_count", **gpt) == 1  # the stream
    assert value(found, "thanos_tokens_total", direction="in", **gpt) == 10  # 5 + 5
    assert value(found, "thanos_tokens_total", direction="out", **gpt) == 14  # 7 + 7
    assert value(found, "thanos_cost_usd_total", **gpt) == pytest.approx(
        2 * (5 * 0.15 + 7 * 0.6) / 1e6
    )
    assert value(found, "thanos_attempt_failures_total", provider="openai", reason="500") == 2
    assert value(found, "thanos_retries_total", provider="openai") == 1  # 500 is retried once
    assert value(found, "thanos_attempt_failures_total", provider="down", reason="503") == 1
    assert value(found, "thanos_attempt_failures_total", provider="flaky", reason="503") == 1
    assert value(found, "thanos_fallbacks_total", from_provider="down", to_provider="spare") == 1
    assert value(found, "thanos_retries_total", provider="flaky") == 1
    assert value(found, "thanos_gateway_overhead_seconds_count") == 2  # first-attempt answers
    assert value(found, "thanos_inflight_streams", provider="openai") == 0
    assert value(found, "thanos_circuit_state", provider="openai") == 0


async def test_in_flight_streams_gauge_follows_a_stream() -> None:
    gw = make_gateway()
    chunks = gw.stream(ChatRequest(model="openai/gpt-4o-mini", messages=HI))
    await anext(chunks)
    assert value(samples(await scrape(gw)), "thanos_inflight_streams", provider="openai") == 1
    async for _ in chunks:
        pass
    assert value(samples(await scrape(gw)), "thanos_inflight_streams", provider="openai") == 0


async def test_circuit_state_gauge() -> None:
    gw = make_gateway()
    gw.health["down"].breaker.failure("boom")
    gw.health["down"].breaker.opened_at = 1e18  # opened "now": still cooling down
    gw.health["spare"].breaker.disabled = True
    gw.health["flaky"].breaker.opened_at = 0.0  # cooled down long ago
    found = samples(await scrape(gw))
    states = {p: value(found, "thanos_circuit_state", provider=p) for p in gw.health}
    assert states == {"openai": 0, "down": 2, "spare": 3, "flaky": 1}


async def test_each_gateway_has_its_own_registry() -> None:
    one, two = make_gateway(), make_gateway()
    await one.chat(ChatRequest(model="openai/gpt-4o-mini", messages=HI))
    assert one.metrics.registry is not two.metrics.registry
    gpt = {"provider": "openai", "model": "gpt-4o-mini", "status": "ok"}
    assert value(samples(await scrape(one)), "thanos_requests_total", **gpt) == 1
    assert value(samples(await scrape(two)), "thanos_requests_total", **gpt) == 0


async def test_metrics_need_an_admin_key_when_keys_exist() -> None:
    keys = '[[server.keys]]\nid = "ops"\nkey = "thk-admin-0123456789"\nadmin = true\n'
    keys += '[[server.keys]]\nid = "app"\nkey = "thk-app-0123456789"\n'
    http = client_for(build_app(make_gateway(CONFIG + keys)))
    assert (await http.get("/metrics")).status_code == 401
    bearer = {"authorization": "Bearer thk-app-0123456789"}
    assert (await http.get("/metrics", headers=bearer)).status_code == 403
    bearer = {"authorization": "Bearer thk-admin-0123456789"}
    assert (await http.get("/metrics", headers=bearer)).status_code == 200


async def test_model_labels_are_bounded() -> None:
    gw = make_gateway()
    for i in range(1005):
        gw.metrics.refused(f"p{i}", 502)  # provider labels only come from config in practice
    found = samples(await scrape(gw))
    assert value(found, "thanos_requests_total", provider="p1004", model="other", status="5xx")


async def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
    gw = make_gateway()
    await traffic(gw)
    exposition = (await scrape(gw)).encode()
    result = await anyio.run_process([promtool, "check", "metrics"], input=exposition, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output == ""  # not even a lint warning


# -- contrib/ --------------------------------------------------------------------------------


def dashboard_metrics(dashboard: Mapping[str, Any]) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = set(re.findall(r"\bthanos_[a-z_]+\b", " ".join(exprs)))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


async def test_grafana_dashboard_uses_only_metrics_we_expose() -> None:
    dashboard = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    used = dashboard_metrics(dashboard)
    gw = make_gateway()
    await traffic(gw)
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(await scrape(gw))
    }
    assert used and used <= exposed, used - exposed
    assert {"thanos_requests_total", "thanos_time_to_first_token_seconds"} <= used
    assert {"thanos_circuit_state", "thanos_inflight_streams", "thanos_cost_usd_total"} <= used


def test_compose_runs_the_gateway_with_ollama_and_redis() -> None:
    compose = yaml.safe_load((CONTRIB / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "ollama", "redis"} <= set(services)
    gateway = services["gateway"]
    assert set(gateway["depends_on"]) >= {"ollama", "redis"}
    config_text = (CONTRIB / "thanos.toml").read_text()
    config = parse_config(config_text, source="contrib/thanos.toml", env={})
    assert config.state.backend == "redis" and "redis:6379" in (config.state.url or "")
    assert config.providers["ollama"].base_url == "http://ollama:11434"
    assert "/etc/thanos/config.toml" in " ".join(gateway["volumes"])
    dockerfile = (CONTRIB / "Dockerfile").read_text()
    assert "USER" in dockerfile and "thanos" in dockerfile
    unit = (CONTRIB / "thanos.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "KillSignal=SIGTERM" in unit
