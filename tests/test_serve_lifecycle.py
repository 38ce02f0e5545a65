"""`thanos serve` as a process, around its servers: SIGHUP with gRPC beside HTTP, a config
file watched for changes, `thanos status|stop|reload` by the PID file, systemd's
NOTIFY_SOCKET, TLS for HTTP and gRPC, and streams still open at the drain deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc
import httpx
import pytest
from anyio.abc import Process

from tests.helpers import openai_compatible, self_signed
from tests.servers import Upstream, free_port, running, serve_env
from thanos_asgi.grpc import thanos_pb2 as pb
from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]


@asynccontextmanager
async def serving(
    config: Path, *flags: str, env: dict[str, str] | None = None, scheme: str = "http"
) -> AsyncIterator[tuple[str, Process, Path]]:
    """`thanos serve --config <config> --port <free>`, with HOME and data dirs beside the
    config (and `env`); yields its URL once /health answers, the process, its log."""
    port, log = free_port(), config.parent / "serve.log"
    command = [sys.executable, "-m", "thanos_asgi", "serve", "--config", str(config)]
    with log.open("wb") as out:
        process = await anyio.open_process(
            [*command, "--port", str(port), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**serve_env(config.parent), **(env or {})},
        )
    url = f"{scheme}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = True
    if scheme == "https":
        verify = ssl.create_default_context(cafile=str(config.parent / "cert.pem"))
    try:
        async with httpx.AsyncClient(verify=verify) as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{url}/health", timeout=0.5)).status_code == 200:
                        break
                except httpx.TransportError:
                    assert process.returncode is None, log.read_text()
                    await anyio.sleep(0.05)
        yield url, process, log
    finally:
        if process.returncode is None:
            process.terminate()
        with anyio.fail_after(20):
            await process.wait()


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"still false after {seconds} s")


async def http_providers(http: httpx.AsyncClient) -> set[str]:
    return set((await http.get("/health/ready")).json()["providers"])


async def grpc_models(channel: grpc.aio.Channel) -> set[str]:
    listed = await pb_grpc.ThanosServiceStub(channel).ListModels(pb.Empty(), timeout=5)
    return {model.id for model in listed.models}


async def grpc_chat(channel: grpc.aio.Channel, model: str) -> str:
    stub = pb_grpc.ThanosServiceStub(channel)
    request = pb.ChatRequest(model=model, messages=[pb.Message(role="user", content="hi")])
    messages = [message async for message in stub.ChatCompletion(request, timeout=10)]
    return messages[-1].provider


def logged(log: Path, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in await anyio.Path(log).read_text()

    return check


async def test_sighup_reloads_http_and_grpc_together(tmp_path: Path) -> None:
    grpc_address = f"127.0.0.1:{free_port()}"
    head = f'[server]\ngrpc = "{grpc_address}"\n'
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(head + openai_compatible("one", upstream, "m"))
        async with (
            serving(config) as (url, process, log),
            httpx.AsyncClient(base_url=url, timeout=20) as http,
            grpc.aio.insecure_channel(grpc_address) as channel,
        ):
            assert await http_providers(http) == {"one"}
            assert "one/m" in await grpc_models(channel)
            config.write_text(head + openai_compatible("two", upstream, "m"))
            process.send_signal(signal.SIGHUP)

            async def both_see_two() -> bool:
                return await http_providers(http) == {"two"} and "two/m" in await grpc_models(
                    channel
                )

            await until(both_see_two)
            assert await grpc_chat(channel, "two/m") == "two"
            answer = await http.post(
                "/v1/chat/completions", json={"model": "two/m", "messages": HI}
            )
            assert answer.headers["x-thanos-provider"] == "two"

            config.write_text("[providers.three\nbroken = ")
            process.send_signal(signal.SIGHUP)
            await until(logged(log, "config reload refused"))
            assert await http_providers(http) == {"two"}
            assert await grpc_chat(channel, "two/m") == "two"
            assert process.returncode is None
    assert "config reloaded" in log.read_text()


async def test_watch_config_reloads_on_new_content_and_ignores_a_touch(tmp_path: Path) -> None:
    head = "[server]\nwatch_config = true\n"
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(head + openai_compatible("one", upstream))
        async with (
            serving(config) as (url, _, log),
            httpx.AsyncClient(base_url=url, timeout=20) as http,
        ):
            await until(logged(log, "watching"))
            os.utime(config, (1, 1))  # touched: a new mtime, the same content
            await anyio.sleep(2.5)
            assert "reloading" not in log.read_text()
            config.write_text(head + openai_compatible("two", upstream))
            await until(lambda: _is(http, {"two"}))
            config.write_text(head + "[providers.bad\n")
            await until(logged(log, "config reload refused"))
            assert await http_providers(http) == {"two"}
    text = log.read_text()
    assert text.count("changed; reloading") == 2 and text.count("config reloaded") == 1


async def _is(http: httpx.AsyncClient, names: set[str]) -> bool:
    return await http_providers(http) == names


def thanos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "thanos_asgi", *args]
    env = serve_env(tmp_path)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


async def test_status_reload_and_stop_find_the_gateway_by_its_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "data" / "thanos" / "thanos.pid"
    assert thanos(tmp_path, "status").returncode == 3
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(openai_compatible("one", upstream))
        async with (
            serving(config) as (url, process, log),
            httpx.AsyncClient(base_url=url, timeout=20) as http,
        ):
            assert pid_file.read_text().strip() == str(process.pid)
            status = await anyio.to_thread.run_sync(thanos, tmp_path, "status")
            assert status.returncode == 0 and f"pid {process.pid}" in status.stdout
            second = await anyio.to_thread.run_sync(
                thanos, tmp_path, "serve", "--config", str(config), "--pid-file", str(pid_file)
            )
            assert second.returncode == 2 and "already runs" in second.stderr
            config.write_text(openai_compatible("two", upstream))
            assert (await anyio.to_thread.run_sync(thanos, tmp_path, "reload")).returncode == 0
            await until(lambda: _is(http, {"two"}))
            stop = await anyio.to_thread.run_sync(thanos, tmp_path, "stop")
            assert stop.returncode == 0 and "stopped" in stop.stdout
            with anyio.fail_after(5):
                await process.wait()
    assert not pid_file.exists()
    assert thanos(tmp_path, "status").returncode == 3
    assert "Application shutdown complete" in log.read_text()


async def test_systemd_notify_socket_hears_ready_reloading_and_stopping(tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        listener.settimeout(10)
        async with running(Upstream()) as upstream:
            config = tmp_path / "thanos.toml"
            config.write_text(openai_compatible("one", upstream))
            env = {"NOTIFY_SOCKET": str(address)}
            async with serving(config, env=env) as (_, process, _):
                ready = await anyio.to_thread.run_sync(listener.recv, 4096)
                process.send_signal(signal.SIGHUP)
                reloading = await anyio.to_thread.run_sync(listener.recv, 4096)
                ready_again = await anyio.to_thread.run_sync(listener.recv, 4096)
                process.send_signal(signal.SIGTERM)
                stopping = await anyio.to_thread.run_sync(listener.recv, 4096)
    assert ready.decode().splitlines()[0] == "READY=1"
    assert "STATUS=serving 1 providers" in ready.decode()
    lines = reloading.decode().splitlines()
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].partition("=")[2]) > 0
    assert ready_again.decode().startswith("READY=1")
    assert stopping == b"STOPPING=1"


async def test_tls_for_http_and_grpc(tmp_path: Path) -> None:
    cert, key = self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    grpc_address = f"127.0.0.1:{free_port()}"
    head = (
        f'[server]\ngrpc = "{grpc_address}"\n'
        f'tls_cert = "{tmp_path / "cert.pem"}"\ntls_key = "{tmp_path / "key.pem"}"\n'
    )
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(head + openai_compatible("one", upstream, "m"))
        async with serving(config, scheme="https") as (url, _, log):
            trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
            async with httpx.AsyncClient(base_url=url, verify=trusted, timeout=20) as http:
                answer = await http.post(
                    "/v1/chat/completions", json={"model": "one/m", "messages": HI}
                )
            credentials = grpc.ssl_channel_credentials(root_certificates=cert)
            async with grpc.aio.secure_channel(grpc_address, credentials) as channel:
                assert await grpc_chat(channel, "one/m") == "one"
            async with grpc.aio.insecure_channel(grpc_address) as plain:
                with pytest.raises(grpc.aio.AioRpcError):
                    await grpc_models(plain)
            async with httpx.AsyncClient(base_url=url.replace("https", "http")) as plain_http:
                with pytest.raises(httpx.TransportError):
                    await plain_http.get("/health")
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    assert f"listening: {url}, grpcs://{grpc_address}" in log.read_text()


async def test_a_stream_open_at_the_drain_deadline_gets_a_final_error_event(
    tmp_path: Path,
) -> None:
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(openai_compatible("one", upstream))
        async with (
            serving(config, "--drain-seconds", "1") as (url, process, log),
            httpx.AsyncClient(base_url=url, timeout=20) as http,
        ):
            body = {"model": "one/drip-100", "messages": HI, "stream": True}
            lines: list[str] = []
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        lines.append(line)
                        if len(lines) == 2:
                            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                await process.wait()
    final = json.loads(lines[-1].removeprefix("data: "))
    assert final["error"]["code"] == "server_shutting_down" and 2 < len(lines) < 100
    text = log.read_text()
    assert "Traceback" not in text and "CancelledError" not in text, text
    assert "cut off at the drain deadline" in text
