"""Every way a request can end releases what it holds: the provider's concurrency slot, the
circuit breaker's half-open probe, budget and token holds, and the upstream connection.

Real sockets throughout: a scriptable upstream under uvicorn (whose open connections are the
gateway pool's, seen from the other end), the gateway under uvicorn or gRPC, and clients that
leave the way real ones do (a closed socket, a gRPC deadline, `asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from tests.servers import Upstream, free_port, running
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import parse_config
from thanos_asgi.context import Context, KeyPolicy
from thanos_asgi.core.reply import Reply
from thanos_asgi.core.resilience import Health
from thanos_asgi.frontends.app import ThanosApp
from thanos_asgi.types import ChatRequest, Message, Target

pytestmark = pytest.mark.anyio
HI = [Message(role="user", content="hi")]
ONE_SLOT = "max_concurrent_requests = 1\nmax_queue = 0\n"


@asynccontextmanager
async def upstream_server(app: Upstream) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """`app` under uvicorn on loopback; yields its URL and the server (to count connections)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def config_for(url: str, extra: str = "", health: str = "") -> str:
    return f"""
[routing]
max_retries = 0
[health]
failure_threshold = 1
cooldown_seconds = 0.2
{health}
[providers.a]
kind = "openai-compatible"
base_url = "{url}/v1"
models = ["m"]
{ONE_SLOT}{extra}
"""


def make_gateway(text: str) -> Gateway:
    return Gateway(parse_config(text, source="lifecycle.toml", env={}))


async def released(gw: Gateway, server: uvicorn.Server, instance: str = "a") -> Health:
    """Wait (up to 2 s) until the upstream has no connection from the gateway left; then
    check that the instance's slot is free and no breaker is stuck probing."""
    for _ in range(200):
        if not server.server_state.connections:
            break
        await asyncio.sleep(0.01)
    assert len(server.server_state.connections) == 0, "the upstream connection was kept"
    health = gw.health[instance]
    assert health.limiter is not None and health.limiter.in_flight == 0
    assert not health.breaker.probing
    assert all(not breaker.probing for breaker in health.models.values())
    return health


def request(model: str, stream: bool = False) -> ChatRequest:
    return ChatRequest(model=model, messages=HI, stream=stream, max_tokens=1)


async def post_then_leave(url: str, path: str, body: dict[str, Any], after: float) -> float:
    """POST `body` over a raw socket, close the socket `after` seconds later; when it closed."""
    parts = urlsplit(url)
    _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    writer.write(f"{head}content-length: {len(data)}\r\n\r\n".encode() + data)
    await writer.drain()
    await asyncio.sleep(after)
    writer.close()
    await writer.wait_closed()
    return time.monotonic()


# -- cancelled before the upstream's first byte ------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_an_http_client_leaving_before_the_first_byte_releases_everything(
    stream: bool,
) -> None:
    upstream = Upstream()
    async with upstream_server(upstream) as (url, server):
        gw = make_gateway(config_for(url))
        async with running(build_app(gw)) as gateway_url:
            body = {"model": "a/delay-5000", "messages": [{"role": "user", "content": "hi"}]}
            left = await post_then_leave(
                gateway_url, "/v1/chat/completions", {**body, "stream": stream}, 0.2
            )
            await asyncio.wait_for(upstream.disconnected.wait(), 2)
            seen_after = time.monotonic() - left
            health = await released(gw, server)
            assert health.breaker.state == "closed" and not health.models
            assert gw.stats["a"].errors == 0  # the client left: not the provider's failure
            assert (await gw.chat(request("a/m"))).choices[0].message.content == "echo: hi"
        await gw.aclose()
    assert seen_after < 0.1  # the upstream request closed within 100 ms of the client leaving


@pytest.mark.parametrize("stream", [False, True])
async def test_a_grpc_deadline_before_the_first_byte_releases_everything(stream: bool) -> None:
    grpc = pytest.importorskip("grpc")
    from thanos_asgi.grpc import start_grpc
    from thanos_asgi.grpc import thanos_pb2 as pb
    from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc

    upstream = Upstream()
    async with upstream_server(upstream) as (url, server):
        gw = make_gateway(config_for(url))
        address = f"127.0.0.1:{free_port()}"
        grpc_server = await start_grpc(gw, address)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.ThanosServiceStub(channel)
                hi = [pb.Message(role="user", content="hi")]
                for _ in range(2):  # two expired deadlines once used up two slots for good
                    slow = pb.ChatRequest(model="a/delay-5000", messages=hi, stream=stream)
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        async for _message in stub.ChatCompletion(slow, timeout=0.3):
                            pass
                    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    await asyncio.wait_for(upstream.disconnected.wait(), 2)
                    upstream.disconnected.clear()
                    health = await released(gw, server)
                    assert health.breaker.state == "closed" and not health.models
                quick = pb.ChatRequest(model="a/m", messages=hi)
                answers = [message async for message in stub.ChatCompletion(quick, timeout=5)]
                assert answers[0].content == "echo: hi"
        finally:
            await grpc_server.stop(None)
            await gw.aclose()


@pytest.mark.parametrize("how", ["chat", "stream"])
async def test_a_library_timeout_before_the_first_byte_releases_everything(how: str) -> None:
    upstream = Upstream()
    async with upstream_server(upstream) as (url, server):
        priced = (
            "[cost]\nmonthly_budget_usd = 100\n[cost.providers.a]\n"
            "input_cost_per_1m_tokens = 0\noutput_cost_per_1m_tokens = 1000000\n"
        )
        gw = make_gateway(priced + config_for(url))
        ctx = Context(key_id="k", policy=KeyPolicy(key_id="k", tpm=100_000))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                if how == "chat":
                    await gw.chat(request("a/delay-5000"), ctx)
                else:
                    async for _chunk in gw.stream(request("a/delay-5000"), ctx):
                        pass
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        health = await released(gw, server)
        assert health.breaker.state == "closed" and not health.models
        await gw.accounting.drain()
        month = time.strftime("%Y-%m", time.gmtime())
        assert await gw.state.spent(f"budget:{month}:global") == (0.0, 0.0)  # reservation back
        window = await gw.state.window_take("tpm:key:k", 0, 100_000, 60)
        assert window.used == 0  # the tokens-per-minute hold went back
        assert (await gw.chat(request("a/m"), ctx)).choices[0].message.content == "echo: hi"
        await gw.aclose()


# -- a cancelled half-open probe -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "breaker"), [("status-503", "model"), ("status-401", "instance")]
)
async def test_a_cancelled_half_open_probe_leaves_the_circuit_usable(
    fault: str, breaker: str
) -> None:
    upstream = Upstream(force=fault)
    async with upstream_server(upstream) as (url, server):
        gw = make_gateway(config_for(url))
        with pytest.raises(Exception, match=r"503|credentials"):
            await gw.chat(request("a/m"))
        health = gw.health["a"]
        opened = health.models["m"] if breaker == "model" else health.breaker
        assert opened.state == "open"
        await asyncio.sleep(0.25)  # cooled down: the next request is the probe
        upstream.force = "delay-5000"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await gw.chat(request("a/m"))
        assert opened.state == "half-open"  # still to be probed, by the next request
        await released(gw, server)
        upstream.force = None
        assert (await gw.chat(request("a/m"))).choices[0].message.content == "echo: hi"
        assert health.breaker.state == "closed" and not health.models
        await gw.aclose()


# -- a stream that fails before its first event --------------------------------------------------


def scope(path: str) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("how", ["fails", "cancelled"])
async def test_a_stream_ending_before_its_first_event_closes_the_upstream(
    path: str, how: str
) -> None:
    upstream = Upstream()
    async with upstream_server(upstream) as (url, server):
        gw = make_gateway(config_for(url))
        app = ThanosApp(gw)
        body = {"model": "a/drip-50", "messages": [{"role": "user", "content": "hi"}]}
        data = json.dumps({**body, "stream": True, "max_tokens": 5}).encode()
        messages = [{"type": "http.request", "body": data, "more_body": False}]
        starting = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            assert message["type"] == "http.response.start"
            starting.set()
            if how == "fails":
                raise OSError("the connection is gone")
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(app(scope(path), receive, send))
        await starting.wait()
        if how == "cancelled":
            task.cancel()
        with pytest.raises(OSError if how == "fails" else asyncio.CancelledError):
            await task
        await asyncio.wait_for(upstream.disconnected.wait(), 1)  # the upstream saw it close
        health = await released(gw, server)
        assert health.breaker.state == "closed" and not health.models
        assert gw.stats["a"].errors == 0
        await gw.aclose()


def test_a_failing_finish_callback_skips_no_other() -> None:
    """Each `on_finish` callback releases its own holds (the provider slot, the tokens-per-minute
    settlement, the cache's single-flight): the first to raise is raised after all have run."""
    reply = Reply(Target("p", "m"), [])
    ran: list[str] = []

    def broken(outcome: str) -> None:
        ran.append("broken")
        raise RuntimeError("ledger unavailable")

    reply.on_finish += [broken, ran.append]
    with pytest.raises(RuntimeError, match="ledger unavailable"):
        reply.finish("ok")
    assert ran == ["broken", "ok"] and reply.finished and reply.on_finish == []
    reply.finish("ok")  # once only
    assert ran == ["broken", "ok"]
