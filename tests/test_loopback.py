"""The gateway for real: uvicorn over loopback, the aiohttp engine upstream, the SDK as client."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import openai
import pytest

from tests.servers import Upstream, running
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import parse_config

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hello loopback"}]


@asynccontextmanager
async def gateway_for(upstream_url: str, extra: str = "", routing: str = "") -> AsyncIterator[str]:
    text = f"""
[server]
keepalive_seconds = 0.2

[routing]
{routing}

[providers.local]
kind = "openai-compatible"
base_url = "{upstream_url}/v1"
models = ["m"]
timeout_ms = 400
{extra}
"""
    gateway = Gateway(parse_config(text, source="loopback.toml", env={}))
    try:
        async with running(build_app(gateway)) as url:
            yield url
    finally:
        await gateway.aclose()


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)


async def test_chat_and_stream_over_loopback() -> None:
    upstream = Upstream()
    async with running(upstream) as up, gateway_for(up) as gw, sdk(gw) as client:
        completion = await client.chat.completions.create(model="local/m", messages=HI)
        assert completion.choices[0].message.content == "echo: hello loopback"
        stream = await client.chat.completions.create(
            model="local/m", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
        assert upstream.bodies[0]["model"] == "m"


async def test_many_concurrent_streams_complete() -> None:
    async with running(Upstream()) as up, gateway_for(up) as gw, sdk(gw) as client:

        async def one(i: int) -> str:
            messages = [{"role": "user", "content": f"n{i}"}]
            stream = await client.chat.completions.create(
                model="local/m",
                messages=messages,  # type: ignore[arg-type]
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [f"echo:n{i}" for i in range(50)]


async def test_client_disconnect_cancels_the_upstream_request() -> None:
    upstream = Upstream()
    async with running(upstream) as up, gateway_for(up) as gw, httpx2.AsyncClient() as http:
        body = {"model": "local/drip-50", "messages": HI, "stream": True}
        async with http.stream("POST", f"{gw}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for data in response.aiter_bytes():
                assert data.startswith(b"data: ")
                break
        started = time.monotonic()
        await asyncio.wait_for(upstream.disconnected.wait(), 3)
        assert time.monotonic() - started < 2


async def test_keepalive_comments_while_upstream_is_silent() -> None:
    async with running(Upstream()) as up, gateway_for(up) as gw, httpx2.AsyncClient() as http:
        body = {"model": "local/pause-350", "messages": HI, "stream": True}
        response = await http.post(f"{gw}/v1/chat/completions", json=body, timeout=5)
    assert b": keep-alive\n\n" in response.content  # keepalive 0.2 s < pause < timeout 0.4 s
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert b"before" in response.content and b"after" in response.content


async def test_upstream_silent_past_the_timeout_ends_with_an_error_event() -> None:
    async with running(Upstream()) as up, gateway_for(up) as gw, httpx2.AsyncClient() as http:
        body = {"model": "local/pause-1200", "messages": HI, "stream": True}
        response = await http.post(f"{gw}/v1/chat/completions", json=body, timeout=5)
    events = response.content.split(b"\n\n")
    assert b"before" in response.content and b"after" not in response.content
    assert b'"code":"upstream_timeout"' in [e for e in events if e][-1]
    assert b"[DONE]" not in response.content


async def test_hung_upstream_times_out_with_504() -> None:
    no_retries = "max_retries = 0"
    async with (
        running(Upstream()) as up,
        gateway_for(up, routing=no_retries) as gw,
        sdk(gw) as client,
    ):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="local/delay-5000", messages=HI)
        elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert 0.32 <= elapsed < 0.48 + 0.3  # timeout_ms = 400, within 20% (+ loopback slack)


async def test_unreachable_upstream_is_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = f"http://127.0.0.1:{port}"
    async with gateway_for(unreachable, routing="max_retries = 0") as gw, sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="local/m", messages=HI)
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_unreachable"
