"""OpenTelemetry spans: one per request, what they hold, and what they never hold."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from functools import partial

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.helpers import (
    AUTH,
    BASIC,
    BODY,
    CLIENT_SECRET,
    KEY,
    QUERY_SECRET,
    TEAM_A,
    call,
    client_for,
    config,
    gateway,
    openai_compatible,
)
from tests.servers import Upstream, running
from tests.upstreams import FakeOpenAI
from thanos_asgi import ConfigError, Gateway, build_app, default_middleware
from thanos_asgi.config import parse_config
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.frontends.middleware.tracing import TracingMiddleware

pytestmark = pytest.mark.anyio
TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def traced(gw: Gateway, exporter: InMemorySpanExporter) -> ASGIApp:
    """The default stack with a TracingMiddleware on its own provider, where the config puts it."""
    stack = default_middleware(gw)
    stack.insert(1, partial(TracingMiddleware, tracer_provider=tracer_provider(exporter)))
    return build_app(gw, middleware=stack)


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = exporter.get_finished_spans()
    return span


def assert_no_secrets(exporter: InMemorySpanExporter) -> None:
    dumped = "".join(span.to_json() for span in exporter.get_finished_spans())
    for secret in (CLIENT_SECRET, QUERY_SECRET, KEY, "hello there"):
        assert secret not in dumped


async def test_a_chat_completion_is_one_span_with_what_was_answered(
    exporter: InMemorySpanExporter,
) -> None:
    http = client_for(traced(gateway(FakeOpenAI(), BASIC + TEAM_A), exporter))
    url = f"/v1/chat/completions?key={QUERY_SECRET}"
    response = await http.post(url, json=BODY, headers=AUTH)
    assert response.status_code == 200
    span = only(exporter)
    assert span.name == "POST /v1/chat/completions" and span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET and span.parent is None
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "url.path": "/v1/chat/completions",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "thanos.request_id": "req-42",
        "thanos.key_id": "team-a",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 7,
        "thanos.cost_usd": pytest.approx((5 * 0.15 + 7 * 0.6) / 1e6),
        "thanos.attempts": ("openai:ok",),
        "thanos.outcome": "ok",
    }
    assert_no_secrets(exporter)


async def test_a_stream_is_one_span_ended_with_its_usage(exporter: InMemorySpanExporter) -> None:
    http = client_for(traced(gateway(FakeOpenAI(), BASIC + TEAM_A), exporter))
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.text.endswith("data: [DONE]\n\n")
    attributes = only(exporter).attributes or {}
    assert attributes["http.response.status_code"] == 200 and attributes["thanos.outcome"] == "ok"
    assert attributes["gen_ai.usage.input_tokens"] == 5
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["thanos.cost_usd"] > 0 and attributes["gen_ai.response.model"]
    assert_no_secrets(exporter)


async def test_the_span_continues_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    http = client_for(traced(gateway(FakeOpenAI()), exporter))
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "congo=t61rcWkgMzE"}
    await http.get("/v1/models/gpt-4o-mini", headers=headers)
    span = only(exporter)
    assert span.name == "GET /v1/models/{model}"
    assert (span.attributes or {})["http.route"] == "/v1/models/{model}"
    assert span.parent is not None and span.parent.is_remote
    assert span.parent.span_id == int(PARENT_ID, 16)
    assert span.context is not None and span.context.trace_id == int(TRACE_ID, 16)
    assert span.context.trace_state.get("congo") == "t61rcWkgMzE"


async def test_upstream_failure_and_a_failed_stream_are_errors(
    exporter: InMemorySpanExporter,
) -> None:
    http = client_for(traced(gateway(FakeOpenAI()), exporter))
    response = await http.post("/v1/chat/completions", json={**BODY, "model": "openai/fail-500"})
    assert response.status_code == 502
    body = {**BODY, "model": "openai/error-event", "stream": True}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    failed, broken = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["http.response.status_code"] == 502
    assert (failed.attributes or {})["error.type"] == "502"
    assert broken.status.status_code is StatusCode.ERROR
    assert (broken.attributes or {})["thanos.outcome"] == "error"
    assert_no_secrets(exporter)


async def test_refused_and_unrouted_requests(exporter: InMemorySpanExporter) -> None:
    http = client_for(traced(gateway(FakeOpenAI(), BASIC + TEAM_A), exporter))
    wrong = "thk-wrong-SECRET-0000000000"
    response = await http.post("/v1/chat/completions", json=BODY, headers={"x-api-key": wrong})
    assert response.status_code == 401
    await http.get(f"/wp-admin/{QUERY_SECRET}", headers=AUTH)
    refused, unrouted = exporter.get_finished_spans()
    assert refused.name == "POST /v1/chat/completions"
    assert refused.status.status_code is StatusCode.UNSET
    assert "thanos.key_id" not in (refused.attributes or {})
    assert unrouted.name == "GET" and "http.route" not in (unrouted.attributes or {})
    assert wrong not in refused.to_json()


async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError(f"upstream refused {KEY}")


async def test_an_exception_is_an_error_without_its_message(
    exporter: InMemorySpanExporter,
) -> None:
    with pytest.raises(RuntimeError):
        await call(TracingMiddleware(crashing, tracer_provider(exporter)))
    span = only(exporter)
    assert span.status.status_code is StatusCode.ERROR and not span.events
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert (span.attributes or {})["http.response.status_code"] == 500
    assert_no_secrets(exporter)


async def test_a_client_leaving_a_stream_ends_its_span(exporter: InMemorySpanExporter) -> None:
    async with running(Upstream()) as up:
        text = openai_compatible("local", up, "m")
        gw = Gateway(parse_config(text, source="t.toml", env={}))
        messages = [{"role": "user", "content": "hi"}]
        body = {"model": "local/drip-50", "messages": messages, "stream": True}
        async with running(traced(gw, exporter)) as url, httpx2.AsyncClient() as http:
            async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                async for _ in response.aiter_bytes():
                    break
            for _ in range(300):
                if exporter.get_finished_spans():
                    break
                await asyncio.sleep(0.01)
        await gw.aclose()
    span = only(exporter)
    assert (span.attributes or {})["thanos.outcome"] == "disconnected"
    assert (span.attributes or {})["http.response.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET


def test_tracing_is_off_by_default_and_on_with_the_config() -> None:
    assert TracingMiddleware not in default_middleware(Gateway(config()))
    stack = default_middleware(Gateway(config("[server]\ntracing = true\n" + BASIC)))
    assert stack[1] is TracingMiddleware


def test_tracing_without_opentelemetry_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = Gateway(config("[server]\ntracing = true\n" + BASIC))
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "thanos_asgi.frontends.middleware.tracing")
    with pytest.raises(ConfigError, match=r"pip install 'thanos-asgi\[otel\]'"):
        default_middleware(gw)


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, thanos_asgi, thanos_asgi.frontends.stack, thanos_asgi.frontends.middleware; "
        "print('opentelemetry' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
