"""Fallbacks, retries, circuits, limits and timeouts against faulty upstreams over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx2
import openai
import pytest

from tests.rawserver import answer, read_request, serving
from tests.servers import Upstream, resetting, running
from tests.upstreams import completion
from thanos_asgi import Gateway, H1Transport, build_app
from thanos_asgi.config import parse_config

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]


def provider(name: str, url: str, extra: str = "") -> str:
    return f"""
[providers.{name}]
kind = "openai-compatible"
base_url = "{url}/v1"
models = ["m"]
timeout_ms = 2000
{extra}
"""


@asynccontextmanager
async def gateway(text: str) -> AsyncIterator[tuple[Gateway, openai.AsyncOpenAI]]:
    """A gateway for `text` served over loopback, and an SDK client for it."""
    gw = Gateway(parse_config(text, source="resilience.toml", env={}))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(gw.aclose)
        url = await stack.enter_async_context(running(build_app(gw)))
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        await stack.enter_async_context(client)
        yield gw, client


async def attempts_of(client: openai.AsyncOpenAI, **extra: object) -> str:
    raw = await client.chat.completions.with_raw_response.create(
        model="m",
        messages=HI,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
    return raw.headers["x-thanos-attempts"]


@pytest.mark.parametrize("fault", ["status-503", "status-500", "garbage", "delay-5000", "reset"])
async def test_every_request_succeeds_while_one_candidate_is_healthy(fault: str) -> None:
    healthy = Upstream()
    async with AsyncExitStack() as stack:
        if fault == "reset":
            bad_url = await stack.enter_async_context(resetting())
        else:
            bad_url = await stack.enter_async_context(running(Upstream(force=fault)))
        good_url = await stack.enter_async_context(running(healthy))
        text = (
            "[routing]\nmax_retries = 0\n[health]\nfailure_threshold = 1000\n"
            + provider("bad", bad_url, "first_byte_timeout_ms = 300")
            + provider("good", good_url)
        )
        _, client = await stack.enter_async_context(gateway(text))
        results = await asyncio.gather(*(attempts_of(client) for _ in range(10)))
    assert all(result.endswith("good:ok") and result.startswith("bad:") for result in results)
    assert len(healthy.bodies) == 10


async def test_client_errors_are_never_retried_or_failed_over() -> None:
    bad, good = Upstream(force="status-400"), Upstream()
    async with running(bad) as bad_url, running(good) as good_url:
        text = "[routing]\nmax_retries = 3\n" + provider("a", bad_url) + provider("b", good_url)
        async with gateway(text) as (_, client):
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
    assert len(bad.bodies) == 1 and good.bodies == []


async def test_transient_failures_are_retried_with_backoff() -> None:
    flaky = Upstream(force="flaky-2")
    async with running(flaky) as url:
        text = "[routing]\nmax_retries = 2\nretry_backoff_ms = 50\n" + provider("only", url)
        async with gateway(text) as (_, client):
            attempts = await attempts_of(client)
    assert attempts == "only:503,only:503,only:ok"
    assert len(flaky.bodies) == 3


async def test_retry_after_is_honoured() -> None:
    limited = Upstream(force="ratelimit-1")
    async with running(limited) as url:
        text = "[routing]\nmax_retries = 1\nretry_backoff_ms = 10\n" + provider("only", url)
        async with gateway(text) as (_, client):
            started = time.monotonic()
            attempts = await attempts_of(client)
            elapsed = time.monotonic() - started
    assert attempts == "only:429,only:ok"
    assert 1.0 <= elapsed < 2.0


async def test_retry_after_is_capped() -> None:
    limited = Upstream(force="ratelimit-30")
    async with running(limited) as url:
        text = (
            "[routing]\nmax_retries = 1\nretry_backoff_ms = 10\nmax_retry_delay_ms = 300\n"
            + provider("only", url)
        )
        async with gateway(text) as (_, client):
            started = time.monotonic()
            await attempts_of(client)
            assert time.monotonic() - started < 1.5


async def test_circuit_opens_after_threshold_and_recovers() -> None:
    bad, good = Upstream(force="status-503"), Upstream()
    async with running(bad) as bad_url, running(good) as good_url:
        text = (
            "[routing]\nmax_retries = 0\n[health]\nfailure_threshold = 3\ncooldown_seconds = 0.5\n"
            + provider("a", bad_url)
            + provider("b", good_url)
        )
        async with gateway(text) as (gw, client):
            seen = [await attempts_of(client) for _ in range(5)]
            assert seen[:3] == ["a:503,b:ok"] * 3
            assert seen[3:] == ["a:circuit_open,b:ok"] * 2
            assert len(bad.bodies) == 3
            status = gw.status()["a"]  # a 503 for "m" is that model's failure
            assert status["models"]["m"]["state"] == "open" and status["state"] == "closed"
            await asyncio.sleep(0.6)
            bad.force = None  # the provider recovers; the half-open probe finds out
            assert await attempts_of(client) == "a:ok"
            assert gw.status()["a"]["state"] == "closed" and "models" not in gw.status()["a"]


async def test_failed_probe_opens_the_circuit_again() -> None:
    bad, good = Upstream(force="status-503"), Upstream()
    async with running(bad) as bad_url, running(good) as good_url:
        text = (
            "[routing]\nmax_retries = 0\n[health]\nfailure_threshold = 1\ncooldown_seconds = 0.3\n"
            + provider("a", bad_url)
            + provider("b", good_url)
        )
        async with gateway(text) as (_, client):
            assert await attempts_of(client) == "a:503,b:ok"
            await asyncio.sleep(0.35)
            assert await attempts_of(client) == "a:503,b:ok"  # the probe
            assert await attempts_of(client) == "a:circuit_open,b:ok"


async def test_first_byte_timeout_holds_within_20_percent() -> None:
    async with running(Upstream(force="delay-5000")) as url:
        text = "[routing]\nmax_retries = 0\n" + provider("slow", url, "first_byte_timeout_ms = 500")
        async with gateway(text) as (_, client):
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
            elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert 0.4 <= elapsed <= 0.6 + 0.15


async def test_request_deadline_covers_all_attempts() -> None:
    async with running(Upstream(force="status-503")) as url:
        text = (
            "[routing]\nmax_retries = 10\nretry_backoff_ms = 200\nrequest_timeout_ms = 700\n"
            + provider("only", url)
        )
        async with gateway(text) as (_, client):
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError):
                await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
            assert time.monotonic() - started < 1.0


async def test_truncated_stream_ends_with_an_error_event() -> None:
    async with (
        running(Upstream(force="cut")) as url,
        gateway(provider("only", url)) as (_, sdk),
        httpx2.AsyncClient() as http,
    ):
        body = {"model": "m", "messages": HI, "stream": True}
        response = await http.post(f"{sdk.base_url}chat/completions", json=body)
    last = [event for event in response.content.split(b"\n\n") if event][-1]
    assert last.startswith(b'data: {"error"') and b"upstream_bad_response" in last
    assert b"[DONE]" not in response.content


async def test_concurrency_limit_sends_overflow_to_the_next_candidate() -> None:
    slow, spare = Upstream(force="delay-400"), Upstream()
    async with running(slow) as slow_url, running(spare) as spare_url:
        limited = "max_concurrent_requests = 1\nmax_queue = 0"
        text = "[routing]\nmax_retries = 0\n" + provider("a", slow_url, limited)
        text += provider("b", spare_url)
        async with gateway(text) as (gw, client):
            results = await asyncio.gather(*(attempts_of(client) for _ in range(3)))
            assert gw.status()["a"]["in_flight"] == 0
    assert sorted(results) == ["a:ok", "a:provider_busy,b:ok", "a:provider_busy,b:ok"]


async def test_fallback_off_header_tries_only_the_first_candidate() -> None:
    bad, good = Upstream(force="status-503"), Upstream()
    async with running(bad) as bad_url, running(good) as good_url:
        text = "[routing]\nmax_retries = 0\n" + provider("a", bad_url) + provider("b", good_url)
        async with gateway(text) as (_, client):
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(
                    model="m",
                    messages=HI,  # type: ignore[arg-type]
                    extra_headers={"x-thanos-fallback": "off"},
                )
    assert info.value.status_code == 503 and good.bodies == []


async def test_health_check_disables_and_reenables_an_instance() -> None:
    bad, good = Upstream(), Upstream()
    async with running(bad) as bad_url, running(good) as good_url:
        text = (
            "[routing]\nmax_retries = 0\n"
            "[health]\nauto_disable_on_failure = true\ncheck_interval_seconds = 3600\n"
            f'[health.a]\nping_endpoint = "{bad_url}/v1/status-503"\n'
            + provider("a", bad_url)
            + provider("b", good_url)
        )
        async with gateway(text) as (gw, client):
            assert not await gw.monitor.check("a")  # the ping answers 503 -> disabled
            assert gw.status()["a"]["state"] == "disabled"
            assert await attempts_of(client) == "a:circuit_disabled,b:ok"
            gw.monitor.checks["a"] = msgspec_replace(gw.monitor.checks["a"], f"{good_url}/")
            assert await gw.monitor.check("a")
            assert await attempts_of(client) == "a:ok"


def msgspec_replace(check: object, url: str) -> object:
    import msgspec

    return msgspec.structs.replace(check, ping_endpoint=url)  # type: ignore[type-var]


async def test_an_upstream_401_fails_over_to_the_next_instance() -> None:
    wrong_key, good = Upstream(force="status-401"), Upstream()
    async with running(wrong_key) as bad_url, running(good) as good_url:
        text = (
            "[routing]\nmax_retries = 2\nretry_backoff_ms = 10\n"
            "[health]\nfailure_threshold = 3\ncooldown_seconds = 30\n"
            + provider("a", bad_url)
            + provider("b", good_url)
        )
        async with gateway(text) as (gw, client):
            assert await attempts_of(client) == "a:401,b:ok"  # and a wrong key is not retried
            with pytest.raises(openai.APIStatusError) as info:  # no other candidate: 502
                await client.chat.completions.create(model="a/m", messages=HI)  # type: ignore[arg-type]
            assert info.value.status_code == 502
            assert info.value.body["code"] == "upstream_authentication_failed"  # type: ignore[index]
            assert await attempts_of(client) == "a:401,b:ok"
            status = gw.status()["a"]  # the instance failed: its own circuit opened
            assert status["state"] == "open" and "models" not in status
            assert await attempts_of(client) == "a:circuit_open,b:ok"
    assert len(wrong_key.bodies) == 3 and len(good.bodies) == 3


async def test_a_failing_model_opens_only_its_own_circuit() -> None:
    upstream = Upstream()
    async with running(upstream) as url:
        text = "[routing]\nmax_retries = 0\n[health]\nfailure_threshold = 2\n" + provider("a", url)
        async with gateway(text) as (gw, client):
            for _ in range(3):
                with pytest.raises(openai.APIStatusError) as info:
                    await client.chat.completions.create(model="a/status-503", messages=HI)  # type: ignore[arg-type]
            assert info.value.body["code"] == "circuit_open"  # type: ignore[index]
            assert upstream.seen["status-503"] == 2  # the third never reached the provider
            for _ in range(3):  # the instance's healthy models are untouched
                assert await attempts_of(client) == "a:ok"
            status = gw.status()["a"]
            assert status["state"] == "closed"
            assert status["models"] == {"status-503": {"state": "open", "consecutive_failures": 2}}
            async with httpx2.AsyncClient() as http:
                ready = await http.get(f"{client.base_url}".removesuffix("v1/") + "health/ready")
                metrics = await http.get(f"{client.base_url}".removesuffix("v1/") + "metrics")
    assert ready.json()["providers"]["a"]["models"]["status-503"]["state"] == "open"
    assert 'thanos_circuit_state{provider="a"} 0.0' in metrics.text
    assert 'thanos_model_circuit_state{model="status-503",provider="a"} 2.0' in metrics.text


async def test_a_full_connection_pool_does_not_open_the_circuit() -> None:
    """Waiting past the connect timeout for a connection of the gateway's own pool is a
    refusal of ours and says nothing about the provider. Five of them opened the provider's
    circuit, so in a burst above the pool's size (1,000 connections) requests that a freed
    connection would soon have served were refused at once, until one in flight succeeded."""
    release = asyncio.Event()

    async def stalling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(answer(json.dumps(completion("m", "hello")).encode()))
            await writer.drain()

    async with serving(stalling) as server:
        text = (
            f'[routing]\nmax_retries = 0\n[providers.a]\nkind = "openai-compatible"\n'
            f'base_url = "{server.url.removesuffix("/chat")}"\nmodels = ["m"]\n'
            "timeout_ms = 30000\nconnect_timeout_ms = 100\n"  # (the pool's wait: connect's)
        )
        config = parse_config(text, source="pool.toml", env={})
        gw = Gateway(config, transport=H1Transport(max_connections=1))
        async with AsyncExitStack() as stack:
            stack.push_async_callback(gw.aclose)
            base = await stack.enter_async_context(running(build_app(gw)))
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)
            await stack.enter_async_context(client)
            first = asyncio.ensure_future(client.chat.completions.create(model="m", messages=HI))
            await asyncio.sleep(0.05)  # it holds the pool's only connection
            for _ in range(6):  # more than the failures that open a circuit (5)
                with pytest.raises(openai.APIStatusError) as refused:
                    await client.chat.completions.create(model="m", messages=HI)
                assert refused.value.status_code == 503
                assert "came free in time" in refused.value.message
                assert "circuit open" not in refused.value.message
            release.set()
            assert (await first).choices[0].message.content == "hello"
