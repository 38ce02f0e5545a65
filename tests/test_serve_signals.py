"""`thanos serve` as a process: SIGHUP reloads the config (a bad one is refused), SIGTERM drains
in-flight streams up to --drain-seconds, and its log never shows a client's secrets."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import Process

from tests.helpers import openai_compatible
from tests.servers import Upstream, running, thanos_serve

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]
SECRET = "thk-serve-SECRET-0123456789abcdef"


@asynccontextmanager
async def serve(config: Path, *flags: str) -> AsyncIterator[tuple[str, Process, Path]]:
    """`thanos serve --config <config>` on a free port, once it answers; yields its URL,
    process and log file."""
    async with thanos_serve(config, *flags) as (port, process, log):
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{url}/health", timeout=0.5)).status_code == 200:
                        break
                except httpx.TransportError:
                    assert process.returncode is None, log.read_text()
                    await anyio.sleep(0.05)
        yield url, process, log


@asynccontextmanager
async def serve_one(
    tmp_path: Path, *flags: str, extra: str = ""
) -> AsyncIterator[tuple[httpx.AsyncClient, Process, Path]]:
    """`thanos serve <flags>` with an Upstream as its provider "one" (and `extra` config);
    yields a client for it, the process and its log file."""
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(openai_compatible("one", upstream) + extra)
        async with (
            serve(config, *flags) as (url, process, log),
            httpx.AsyncClient(base_url=url, timeout=20) as http,
        ):
            yield http, process, log


async def providers(http: httpx.AsyncClient) -> set[str]:
    return set((await http.get("/health/ready")).json()["providers"])


async def chat(http: httpx.AsyncClient, model: str) -> httpx.Response:
    return await http.post("/v1/chat/completions", json={"model": model, "messages": HI})


async def read_stream(http: httpx.AsyncClient, model: str, started: anyio.Event) -> list[str]:
    """The `data:` lines of a streamed answer; sets `started` at the first one."""
    body = {"model": model, "messages": HI, "stream": True}
    events = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(line)
                started.set()
    return events


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"still false after {seconds} s")


async def test_sighup_reloads_and_a_bad_config_keeps_the_old_one(tmp_path: Path) -> None:
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(openai_compatible("one", upstream))
        async with (
            serve(config) as (url, process, log),
            httpx.AsyncClient(base_url=url, timeout=20) as http,
            anyio.create_task_group() as group,
        ):
            assert await providers(http) == {"one"}
            streams: list[list[str]] = []
            started = anyio.Event()

            async def in_flight() -> None:  # 100 events, 20 ms apart, across the reload
                streams.append(await read_stream(http, "one/drip-20", started))

            group.start_soon(in_flight)
            await started.wait()
            config.write_text(
                openai_compatible("one", upstream) + openai_compatible("two", upstream)
            )
            process.send_signal(signal.SIGHUP)
            await until(lambda: _has(http, "two"))
            answer = await chat(http, "two/m")
            assert answer.status_code == 200 and answer.headers["x-thanos-provider"] == "two"

            config.write_text("[providers.three\nbroken = ")
            process.send_signal(signal.SIGHUP)
            await until(lambda: _logged(log, "config reload refused"))
            assert await providers(http) == {"one", "two"}
            assert (await chat(http, "two/m")).headers["x-thanos-provider"] == "two"
        assert process.returncode in (0, -signal.SIGTERM)
    [events] = streams
    assert len(events) == 102 and events[-1] == "data: [DONE]"  # the old gateway drained it
    output = log.read_text()
    assert "config reloaded" in output and "thanos.toml" in output


async def _has(http: httpx.AsyncClient, name: str) -> bool:
    return name in await providers(http)


async def _logged(log: Path, text: str) -> bool:
    return text in await anyio.Path(log).read_text()


async def test_sigterm_drains_an_in_flight_stream(tmp_path: Path) -> None:
    async with serve_one(tmp_path, "--drain-seconds", "20") as (http, process, log):
        started = anyio.Event()
        async with anyio.create_task_group() as group:
            streams: list[list[str]] = []

            async def in_flight() -> None:  # 100 events, 30 ms apart: 3 s
                streams.append(await read_stream(http, "one/drip-30", started))

            group.start_soon(in_flight)
            await started.wait()
            process.send_signal(signal.SIGTERM)
            await anyio.sleep(0.5)
            async with httpx.AsyncClient(base_url=http.base_url) as fresh:
                with pytest.raises(httpx.TransportError):  # no new connections now
                    await fresh.get("/health")
        with anyio.fail_after(10):
            await process.wait()
    [events] = streams
    assert len(events) == 102 and events[-1] == "data: [DONE]"
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()


async def test_sigterm_cancels_streams_after_the_drain_timeout(tmp_path: Path) -> None:
    async with serve_one(tmp_path, "--drain-seconds", "1") as (http, process, _):
        started = anyio.Event()
        events: list[str] = []

        async def in_flight() -> None:  # 100 events, 100 ms apart: 10 s
            with contextlib.suppress(httpx.TransportError):  # cut off: what the timeout is for
                events.extend(await read_stream(http, "one/drip-100", started))

        async with anyio.create_task_group() as group:
            group.start_soon(in_flight)
            await started.wait()
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(6):
                await process.wait()
    assert "data: [DONE]" not in events


async def test_serve_logs_json_lines_without_client_secrets(tmp_path: Path) -> None:
    keys = f'[[server.keys]]\nid = "team-a"\nkey = "{SECRET}"\n'
    async with serve_one(tmp_path, "--log-format", "json", extra=keys) as (http, _, log):
        headers = {"authorization": f"Bearer {SECRET}"}
        body = {"model": "one/m", "messages": HI}
        path = f"/v1/chat/completions?key={SECRET}"
        assert (await http.post(path, json=body, headers=headers)).status_code == 200
        wrong = {"x-api-key": SECRET[::-1]}
        assert (await http.post(path, json=body, headers=wrong)).status_code == 401
    output = log.read_text()
    assert SECRET not in output and SECRET[::-1] not in output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "thanos_asgi.access" and r["path"] != "/health"]
    assert [(r["status"], r["key_id"], r["path"]) for r in access] == [
        (200, "team-a", "/v1/chat/completions"),
        (401, None, "/v1/chat/completions"),
    ]
    assert any("Application startup complete" in r.get("message", "") for r in records)
