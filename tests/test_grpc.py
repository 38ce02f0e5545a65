"""The gRPC API for real: grpcio aio clients over loopback against a running ThanosService."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

grpc = pytest.importorskip("grpc")

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402

from tests import helpers  # noqa: E402
from tests.servers import Upstream, free_port, home_env, running  # noqa: E402
from tests.upstreams import SSE, FakeOpenAI, chunk  # noqa: E402
from thanos_asgi import Gateway, build_app  # noqa: E402
from thanos_asgi.config import parse_config  # noqa: E402
from thanos_asgi.governance.ledger import Ledger  # noqa: E402
from thanos_asgi.governance.state import StateBackend  # noqa: E402
from thanos_asgi.grpc import generate, grpc_lifespan, start_grpc  # noqa: E402
from thanos_asgi.grpc import thanos_pb2 as pb  # noqa: E402
from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc  # noqa: E402

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
HI = [pb.Message(role="user", content="hello grpc")]
Stub = pb_grpc.ThanosServiceStub


@asynccontextmanager
async def serving(gateway: Gateway, **options: Any) -> AsyncIterator[grpc.aio.Channel]:
    """`gateway` behind a started gRPC server on a free port; yields a connected channel."""
    address = f"127.0.0.1:{free_port()}"
    server = await start_grpc(gateway, address, **options)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield channel
    finally:
        await server.stop(None)
        await gateway.aclose()


@asynccontextmanager
async def fake(
    handler: Callable[..., Any] | None = None,
    text: str = helpers.BASIC,
    state: StateBackend | None = None,
) -> AsyncIterator[tuple[Stub, Gateway]]:
    gateway = helpers.gateway(handler or FakeOpenAI(), text, state=state)
    async with serving(gateway) as channel:
        yield Stub(channel), gateway


async def collect(stub: Stub, request: pb.ChatRequest, **kw: Any) -> list[pb.ChatResponse]:
    return [message async for message in stub.ChatCompletion(request, **kw)]


async def failure(stub: Stub, request: pb.ChatRequest, **kw: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, request, **kw)
    return info.value


# -- chat -------------------------------------------------------------------------------------


async def test_unary_chat_is_one_complete_message() -> None:
    upstream = FakeOpenAI()
    async with fake(upstream) as (stub, gateway):
        request = pb.ChatRequest(
            model="gpt-4o-mini",
            messages=[pb.Message(role="system", content="be brief"), *HI],
            temperature=0.7,
            top_p=0.9,
            max_tokens=50,
            stop=["END"],
            request_id="req-123",
        )
        call = stub.ChatCompletion(request)
        messages = [message async for message in call]
        metadata = dict(await call.initial_metadata())
    assert len(messages) == 1
    (answer,) = messages
    assert answer.done and answer.content == "echo: hello grpc"
    assert answer.finish_reason == "stop" and answer.reasoning == ""
    assert (answer.provider, answer.model) == ("openai", "gpt-4o-mini")
    assert list(answer.attempts) == ["openai:ok"] and answer.request_id == "req-123"
    assert answer.HasField("usage")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 7)
    assert answer.usage.total_tokens == 12
    assert metadata["x-thanos-provider"] == "openai"
    assert metadata["x-thanos-model"] == "gpt-4o-mini"
    assert metadata["x-request-id"] == "req-123"
    sent = upstream.bodies()[0]
    assert sent["model"] == "gpt-4o-mini" and sent.get("stream") in (None, False)
    assert sent["temperature"] == 0.7 and sent["top_p"] == 0.9  # not 0.699999988 (float32)
    assert sent["max_tokens"] == 50 and sent["stop"] == ["END"]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello grpc"},
    ]
    assert gateway.stats["openai"].requests == 1
    assert gateway.stats["openai"].prompt_tokens == 5


async def test_streaming_chat_yields_deltas_then_done() -> None:
    async with fake() as (stub, gateway):
        messages = await collect(stub, pb.ChatRequest(model="smart", messages=HI, stream=True))
    *deltas, last = messages
    assert [m.content for m in deltas] == ["echo:", "hello", "grpc"]
    assert not any(m.done or m.HasField("usage") for m in deltas)
    assert last.done and last.content == "" and last.finish_reason == "stop"
    assert last.usage.total_tokens == 12 and last.usage.prompt_tokens == 5
    assert list(last.attempts) == ["openai:ok"]
    assert {(m.provider, m.model) for m in messages} == {("openai", "gpt-4o")}
    ids = {m.request_id for m in messages}
    assert len(ids) == 1 and len(ids.pop()) == 32  # made up once, echoed in every message
    assert gateway.stats["openai"].requests == 1
    assert gateway.stats["openai"].completion_tokens == 7


async def test_request_id_from_metadata_when_the_field_is_empty() -> None:
    async with fake() as (stub, _):
        request = pb.ChatRequest(model="smart", messages=HI)
        messages = await collect(stub, request, metadata=(("x-request-id", "from-meta"),))
    assert messages[0].request_id == "from-meta"


def tool_upstream() -> Callable[[httpx.Request], Any]:
    """An upstream that calls `get_weather` (with reasoning first) whenever tools are sent."""
    fallback = FakeOpenAI()

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if not body.get("tools"):
            return await fallback(request)
        handle.bodies.append(body)  # type: ignore[attr-defined]
        model = body["model"]
        if not body.get("stream"):
            function = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
            call = {"id": "call_1", "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            message["reasoning_content"] = "need weather"
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            data = {"id": "c", "object": "chat.completion", "model": model, "choices": [choice]}
            return httpx.Response(200, json=data)
        begin = {"name": "get_weather", "arguments": ""}
        start = {"index": 0, "id": "call_1", "type": "function", "function": begin}
        parts = [
            chunk(model, {"role": "assistant", "reasoning_content": "need weather"}),
            chunk(model, {"tool_calls": [start]}),
            chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk(model, {}, "tool_calls"),
        ]
        return httpx.Response(200, content=b"".join(parts) + b"data: [DONE]\n\n", headers=SSE)

    handle.bodies = []  # type: ignore[attr-defined]
    return handle


WEATHER = pb.Tool(
    name="get_weather",
    description="Weather by city",
    parameters_json='{"type":"object","properties":{"city":{"type":"string"}}}',
)
HISTORY = [
    pb.Message(role="user", content="weather in Rome?"),
    pb.Message(
        role="assistant",
        reasoning="look it up",
        tool_calls=[pb.ToolCall(id="call_0", name="get_weather", arguments_json='{"city":"Rome"}')],
    ),
    pb.Message(role="tool", tool_call_id="call_0", content="sunny"),
    pb.Message(role="user", content="and in Paris?"),
]


async def test_tool_calls_and_reasoning_stream_as_fragments() -> None:
    upstream = tool_upstream()
    async with fake(upstream) as (stub, _):
        request = pb.ChatRequest(
            model="smart", messages=HISTORY, tools=[WEATHER], tool_choice="get_weather", stream=True
        )
        messages = await collect(stub, request)
    assert messages[0].reasoning == "need weather"
    calls = [call for m in messages for call in m.tool_calls]
    assert (calls[0].index, calls[0].id, calls[0].name) == (0, "call_1", "get_weather")
    assert "".join(call.arguments_json for call in calls) == '{"city":"Paris"}'
    assert messages[-1].done and messages[-1].finish_reason == "tool_calls"
    sent = upstream.bodies[0]  # type: ignore[attr-defined]
    function = sent["tools"][0]["function"]
    assert function["name"] == "get_weather" and function["description"] == "Weather by city"
    assert function["parameters"]["properties"] == {"city": {"type": "string"}}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assistant, tool = sent["messages"][1], sent["messages"][2]
    assert assistant["tool_calls"][0]["id"] == "call_0"
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"city":"Rome"}'
    assert "content" not in assistant or assistant["content"] is None
    assert tool == {"role": "tool", "content": "sunny", "tool_call_id": "call_0"}


async def test_unary_tool_calls_are_complete() -> None:
    async with fake(tool_upstream()) as (stub, _):
        request = pb.ChatRequest(model="smart", messages=HISTORY, tools=[WEATHER])
        (answer,) = await collect(stub, request)
    assert answer.done and answer.finish_reason == "tool_calls"
    assert answer.reasoning == "need weather" and answer.content == ""
    assert [(c.index, c.id, c.name, c.arguments_json) for c in answer.tool_calls] == [
        (0, "call_1", "get_weather", '{"city":"Paris"}')
    ]


# -- models and health ------------------------------------------------------------------------


async def test_list_models() -> None:
    async with fake() as (stub, _):
        response = await stub.ListModels(pb.Empty())
    owners = {model.id: model.owned_by for model in response.models}
    assert owners["openai/gpt-4o-mini"] == "openai"
    assert owners["smart"] == "openai" and owners["cheap"] == "deepseek"
    assert owners["xai/live-model"] == "xai"  # what the provider lists itself


async def test_health_reports_providers() -> None:
    async with fake() as (stub, _):
        await collect(stub, pb.ChatRequest(model="smart", messages=HI))
        response = await stub.Health(pb.Empty())
    assert response.status == "ready"
    assert set(response.providers) == {"openai", "deepseek", "xai"}
    openai = response.providers["openai"]
    assert (openai.kind, openai.configured, openai.circuit) == ("openai", True, "closed")
    assert (openai.requests, openai.errors) == (1, 0)
    assert response.providers["xai"].requests == 0


async def test_standard_health_service_is_serving() -> None:
    async with serving(helpers.gateway(FakeOpenAI())) as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        for service in ("", "thanos.ThanosService"):
            answer = await checker.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await checker.Check(health_pb2.HealthCheckRequest(service="nope.Service"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_service() -> None:
    gateway = helpers.gateway(FakeOpenAI())
    async with serving(gateway) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="thanos.ThanosService"),
        ]
        answers = [answer async for answer in reflect.ServerReflectionInfo(iter(asks))]
    names = {service.name for service in answers[0].list_services_response.service}
    assert {"thanos.ThanosService", "grpc.health.v1.Health"} <= names
    (described,) = answers[1].file_descriptor_response.file_descriptor_proto
    assert b"thanos.proto" in described and b"ChatCompletion" in described


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (pb.ChatRequest(model="", messages=HI), "model"),
        (pb.ChatRequest(model="smart"), "messages"),
        (pb.ChatRequest(model="smart", messages=[pb.Message(role="robot", content="x")]), "role"),
        (pb.ChatRequest(model="smart", messages=HI, max_tokens=0), "max_tokens"),
        (
            pb.ChatRequest(
                model="smart", messages=HI, tools=[pb.Tool(name="f", parameters_json="{")]
            ),
            "parameters_json",
        ),
        (
            pb.ChatRequest(
                model="smart", messages=HI, tools=[pb.Tool(name="f", parameters_json="[]")]
            ),
            "parameters_json",
        ),
        (pb.ChatRequest(model="smart", messages=HI, tool_choice="missing_tool"), "tool_choice"),
    ],
)
async def test_bad_input_is_invalid_argument(request_: pb.ChatRequest, param: str) -> None:
    upstream = FakeOpenAI()
    async with fake(upstream) as (stub, _):
        error = await failure(stub, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert param in (error.details() or "")
    assert dict(error.trailing_metadata())["thanos-error-type"] == "invalid_request_error"
    assert not upstream.requests  # refused before anything went upstream


async def test_unknown_model_is_not_found() -> None:
    async with fake() as (stub, _):
        error = await failure(stub, pb.ChatRequest(model="no-such-model", messages=HI))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in (error.details() or "")
    assert dict(error.trailing_metadata())["thanos-error-code"] == "model_not_found"


async def test_upstream_429_is_resource_exhausted_with_retry_after() -> None:
    async with fake() as (stub, gateway):
        error = await failure(stub, pb.ChatRequest(model="openai/fail-429", messages=HI))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(error.trailing_metadata())
    assert trailers["retry-after"] == "3"  # the upstream's own Retry-After
    assert trailers["thanos-error-type"] == "rate_limit_error"
    assert helpers.KEY not in (error.details() or "")
    assert gateway.stats["openai"].errors == 1


async def test_upstream_503_is_unavailable() -> None:
    async with fake() as (stub, _):
        error = await failure(stub, pb.ChatRequest(model="openai/fail-503", messages=HI))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry-after" not in dict(error.trailing_metadata())


async def test_failure_mid_stream_ends_with_an_error_status() -> None:
    async with fake() as (stub, gateway):
        call = stub.ChatCompletion(
            pb.ChatRequest(model="openai/error-event", messages=HI, stream=True)
        )
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for message in call:
                received.append(message)
    assert [m.content for m in received] == ["a"]  # what arrived before the failure
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in (info.value.details() or "")
    assert gateway.stats["openai"].errors == 1


# -- client keys, limits and accounting, shared with HTTP -----------------------------------------

KEYED = helpers.BASIC + '\n[[server.keys]]\nid = "editor"\nkey = "thk_editor_secret"\nrpm = 3\n'
GOOD = (("authorization", "Bearer thk_editor_secret"),)


async def test_client_keys_come_as_bearer_or_x_api_key_metadata() -> None:
    async with serving(helpers.gateway(FakeOpenAI(), KEYED)) as channel:
        stub = Stub(channel)
        request = pb.ChatRequest(model="smart", messages=HI)
        missing = await failure(stub, request)
        wrong = await failure(stub, request, metadata=(("authorization", "Bearer thk_wrong"),))
        (answer,) = await collect(stub, request, metadata=GOOD)
        (other,) = await collect(stub, request, metadata=(("x-api-key", "thk_editor_secret"),))
        with pytest.raises(grpc.aio.AioRpcError) as unlisted:
            await stub.ListModels(pb.Empty())
        ready = await stub.Health(pb.Empty())  # like GET /health/ready: open
        checker = health_pb2_grpc.HealthStub(channel)
        probe = await checker.Check(health_pb2.HealthCheckRequest(service=""))
    assert missing.code() == wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (missing.details() or "")
    assert dict(missing.trailing_metadata())["thanos-error-code"] == "missing_api_key"
    assert "thk_wrong" not in (wrong.details() or "")
    assert answer.content == other.content == "echo: hello grpc"
    assert unlisted.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ready.status == "ready"
    assert probe.status == health_pb2.HealthCheckResponse.SERVING  # probes need no key


async def test_a_keys_rpm_is_shared_with_http() -> None:
    gateway = helpers.gateway(FakeOpenAI(), KEYED, state=helpers.still_state())  # one window
    http = helpers.client_for(build_app(gateway))
    async with serving(gateway) as channel, http:
        stub = Stub(channel)
        request = pb.ChatRequest(model="smart", messages=HI)
        await collect(stub, request, metadata=GOOD)
        body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": "Bearer thk_editor_secret"}
        assert (await http.post("/v1/chat/completions", json=body, headers=headers)).is_success
        await collect(stub, request, metadata=GOOD)
        refused = await failure(stub, request, metadata=GOOD)  # the 4th in a minute, rpm = 3
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over 3 requests per minute" in (refused.details() or "")
    assert 1 <= int(dict(refused.trailing_metadata())["retry-after"]) <= 60


async def test_rpm_per_address_without_keys() -> None:
    text = helpers.BASIC.replace("[routing]", "[server]\nrpm_per_ip = 1\n\n[routing]")
    async with fake(text=text, state=helpers.still_state()) as (stub, _):  # one window
        await collect(stub, pb.ChatRequest(model="smart", messages=HI))
        refused = await failure(stub, pb.ChatRequest(model="smart", messages=HI))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ip 127.0.0.1 is over 1 requests per minute" in (refused.details() or "")


PRICED = (
    helpers.BASIC
    + """
[cost]
ledger_path = "{ledger}"

[cost.providers.openai]
input_cost_per_1m_tokens = 1000000
output_cost_per_1m_tokens = 2000000
"""
)


async def test_cost_and_usage_ledger_as_for_http(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    async with fake(text=PRICED.replace("{ledger}", str(ledger))) as (stub, gateway):
        unary = pb.ChatRequest(model="smart", messages=HI, request_id="r-unary")
        (answer,) = await collect(stub, unary)
        streamed = pb.ChatRequest(model="smart", messages=HI, stream=True, request_id="r-stream")
        done = (await collect(stub, streamed))[-1]
        await gateway.accounting.drain()
    assert answer.cost_usd == pytest.approx(19.0)  # 5 in at $1, 7 out at $2
    assert done.done and done.cost_usd == pytest.approx(19.0)
    rows = [(r.request_id, r.provider, r.model, r.status) for r in Ledger(ledger).rows()]
    assert rows == [("r-unary", "openai", "gpt-4o", "ok"), ("r-stream", "openai", "gpt-4o", "ok")]


# -- against a real upstream: cancellation and concurrency --------------------------------------


def local_gateway(upstream_url: str) -> Gateway:
    text = f"""
[routing]
max_retries = 0

[providers.local]
kind = "openai-compatible"
base_url = "{upstream_url}/v1"
models = ["m"]
"""
    return Gateway(parse_config(text, source="grpc.toml", env={}))


async def test_deadline_exceeded_cancels_the_upstream_request() -> None:
    upstream = Upstream()
    async with running(upstream) as up:
        gateway = local_gateway(up)
        async with serving(gateway) as channel:
            request = pb.ChatRequest(model="local/drip-50", messages=HI, stream=True)
            received: list[pb.ChatResponse] = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for message in Stub(channel).ChatCompletion(request, timeout=0.5):
                    received.append(message)
            started = time.monotonic()
            await asyncio.wait_for(upstream.disconnected.wait(), 3)
            assert time.monotonic() - started < 2
            await asyncio.sleep(0.05)
            stats = gateway.stats["local"]
            assert (stats.requests, stats.errors) == (1, 0)  # recorded as "disconnected"
            assert gateway.health["local"].breaker.state == "closed"
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 2 <= len(received) < 30  # chunks flowed until the deadline, then stopped


async def test_client_cancel_cancels_the_upstream_request() -> None:
    upstream = Upstream()
    async with running(upstream) as up, serving(local_gateway(up)) as channel:
        call = Stub(channel).ChatCompletion(
            pb.ChatRequest(model="local/drip-50", messages=HI, stream=True)
        )
        first = await call.read()
        assert first.content == "0 "
        call.cancel()
        await asyncio.wait_for(upstream.disconnected.wait(), 3)
    assert call.cancelled()


def barrier_upstream(count: int) -> Callable[[httpx.Request], Any]:
    """Streams 'echo:' and then the prompt only once `count` streams are open at once."""
    everyone = asyncio.Event()
    opened = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal opened
        body = json.loads(request.content)
        model, text = body["model"], body["messages"][-1]["content"]

        async def events() -> AsyncIterator[bytes]:
            nonlocal opened
            yield chunk(model, {"role": "assistant", "content": "echo:"})
            opened += 1
            if opened == count:
                everyone.set()
            await asyncio.wait_for(everyone.wait(), 10)
            yield chunk(model, {"content": text}, "stop") + b"data: [DONE]\n\n"

        return httpx.Response(200, content=events(), headers=SSE)

    return handle


async def test_a_hundred_concurrent_streams_all_complete() -> None:
    count = 100
    async with fake(barrier_upstream(count)) as (stub, gateway):

        async def one(i: int) -> str:
            request = pb.ChatRequest(
                model="smart", messages=[pb.Message(role="user", content=f"n{i}")], stream=True
            )
            messages = await collect(stub, request, timeout=20)
            assert messages[-1].done and messages[-1].finish_reason == "stop"
            return "".join(m.content for m in messages)

        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 30)
    assert results == [f"echo:n{i}" for i in range(count)]
    assert gateway.stats["openai"].requests == count


# -- TLS, lifespan ------------------------------------------------------------------------------


async def test_tls_round_trip() -> None:
    cert, key = helpers.self_signed()
    port = free_port()
    gateway = helpers.gateway(FakeOpenAI())
    server = await start_grpc(gateway, f"127.0.0.1:{port}", tls=(cert, key))
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert)
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            (answer,) = await collect(Stub(channel), pb.ChatRequest(model="smart", messages=HI))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await Stub(plain).Health(pb.Empty(), timeout=2)
    finally:
        await server.stop(None)
        await gateway.aclose()
    assert answer.content == "echo: hello grpc"
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # plaintext is refused


async def test_lifespan_helper_starts_and_stops_the_server() -> None:
    address = f"127.0.0.1:{free_port()}"
    gateway = helpers.gateway(FakeOpenAI())
    async with grpc_lifespan(gateway, address, grace=1), grpc.aio.insecure_channel(address) as ch:
        assert (await Stub(ch).Health(pb.Empty())).status == "ready"
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await Stub(channel).Health(pb.Empty(), timeout=1)
    await gateway.aclose()
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_a_taken_port_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = helpers.gateway(FakeOpenAI())
        with pytest.raises(OSError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
            await start_grpc(gateway, f"127.0.0.1:{port}")
        await gateway.aclose()


# -- generated code, packaging -------------------------------------------------------------------


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    fresh = generate.generate(tmp_path)
    stale = [
        path.name for path in fresh if path.read_bytes() != (generate.HERE / path.name).read_bytes()
    ]
    tools = importlib.metadata.version("grpcio-tools")
    assert not stale, (
        f"{stale} differ from what grpcio-tools {tools} makes of proto/thanos.proto: "
        "run python -m thanos_asgi.grpc.generate (and keep the grpcio-tools version pinned)"
    )


def test_importing_thanos_asgi_does_not_import_grpc() -> None:
    code = (
        "import sys, thanos_asgi, thanos_asgi.cli, thanos_asgi.frontends.stack; "
        "loaded = [m for m in sys.modules if m.split('.')[0].startswith('grpc')"
        " or m.startswith('google.protobuf')]; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_example_client_streams_a_chat() -> None:
    gateway = helpers.gateway(FakeOpenAI())
    address = f"127.0.0.1:{free_port()}"
    async with grpc_lifespan(gateway, address, grace=1):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / "grpc_client.py"),
            "--target",
            address,
            "--model",
            "smart",
            "hello example",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    await gateway.aclose()
    assert process.returncode == 0, err.decode()
    assert out.decode() == "echo:helloexample\n"  # the fake upstream streams word by word
    assert "-- openai/gpt-4o, finish: stop, tokens: 5 in / 7 out" in err.decode()


# -- thanos serve -------------------------------------------------------------------------------


@pytest.fixture
def serve_config(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    http_port, grpc_port = free_port(), free_port()
    path = tmp_path / "thanos.toml"
    path.write_text(
        f"""
[server]
bind = "127.0.0.1:{http_port}"
grpc = "127.0.0.1:{grpc_port}"

[providers.local]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{{UPSTREAM_PORT}}/v1"
models = ["m"]
"""
    )
    yield path, http_port, grpc_port


def spawn(config: Path, upstream_port: int) -> subprocess.Popen[bytes]:
    config.write_text(config.read_text().replace("{UPSTREAM_PORT}", str(upstream_port)))
    env = {**os.environ, **home_env(config.parent), "THANOS_CONFIG": str(config)}
    command = [sys.executable, "-m", "thanos_asgi", "serve", "--config", str(config)]
    return subprocess.Popen(
        command, env=env, cwd=config.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


async def wait_for_http(url: str, process: subprocess.Popen[bytes]) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        for _ in range(200):
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"thanos serve exited early:\n{output}")
            try:
                return await http.get(url, timeout=1)
            except httpx2.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("thanos serve did not answer HTTP")


async def test_thanos_serve_runs_http_and_grpc_until_sigterm(
    serve_config: tuple[Path, int, int],
) -> None:
    path, http_port, grpc_port = serve_config
    upstream = Upstream()
    async with running(upstream) as up:
        process = spawn(path, int(up.rsplit(":", 1)[1]))
        try:
            health = await wait_for_http(f"http://127.0.0.1:{http_port}/health", process)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = Stub(channel)
                ready = await stub.Health(pb.Empty(), timeout=5)
                checker = health_pb2_grpc.HealthStub(channel)
                probe = await checker.Check(health_pb2.HealthCheckRequest(), timeout=5)
                request = pb.ChatRequest(model="local/drip-10", messages=HI, stream=True)
                call = stub.ChatCompletion(request, timeout=15)
                first = await call.read()
                process.send_signal(signal.SIGTERM)  # mid-stream: the call may finish
                rest = []
                while (message := await call.read()) is not grpc.aio.EOF:
                    rest.append(message)
            code = await asyncio.to_thread(process.wait, 15)
        finally:
            if process.poll() is None:
                process.kill()
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.providers["local"].kind == "openai-compatible"
    assert probe.status == health_pb2.HealthCheckResponse.SERVING
    text = first.content + "".join(m.content for m in rest)
    assert text == "".join(f"{i} " for i in range(100)) and rest[-1].done
    assert code == 0
    with socket.socket() as sock:  # both ports are free again
        assert sock.connect_ex(("127.0.0.1", http_port)) != 0
        assert sock.connect_ex(("127.0.0.1", grpc_port)) != 0


def test_thanos_serve_without_grpcio_says_what_to_install(
    serve_config: tuple[Path, int, int],
) -> None:
    path = serve_config[0]
    path.write_text(path.read_text().replace("{UPSTREAM_PORT}", "9"))
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('grpc', 'grpc_health', 'grpc_reflection'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from thanos_asgi.cli import main\n"
        f"sys.exit(main(['serve', '--config', {str(path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **home_env(path.parent)},
    )
    assert result.returncode == 2
    assert "pip install 'thanos-asgi[grpc]'" in result.stderr


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "thanos_asgi", "serve", "--config", str(config)]
    env = {**os.environ, **home_env(config.parent)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=30, cwd=config.parent, env=env
    )


def test_thanos_serve_with_the_grpc_port_taken_exits_1(
    serve_config: tuple[Path, int, int],
) -> None:
    path, _, grpc_port = serve_config
    path.write_text(path.read_text().replace("{UPSTREAM_PORT}", "9"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc_port))
        taken.listen()
        result = serve_once(path)
    assert result.returncode == 1
    assert f"thanos: cannot serve gRPC on 127.0.0.1:{grpc_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_thanos_serve_refuses_an_open_grpc_port_beyond_loopback(
    serve_config: tuple[Path, int, int],
) -> None:
    path, _, grpc_port = serve_config
    text = path.read_text().replace("{UPSTREAM_PORT}", "9")
    path.write_text(
        text.replace(f'grpc = "127.0.0.1:{grpc_port}"', f'grpc = "0.0.0.0:{grpc_port}"')
    )
    result = serve_once(path)
    assert result.returncode == 2
    assert f"refusing to serve gRPC on 0.0.0.0:{grpc_port} without client keys" in result.stderr
