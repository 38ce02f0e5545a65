"""Each example as a user runs it: `python -m uvicorn ...` from the repository root on a free
loopback port, its config (THANOS_CONFIG) pointing at a real loopback upstream, called with
the openai SDK. Stopping it with Ctrl-C must close the gateway without complaints."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import openai
import pytest

from tests.helpers import openai_compatible
from tests.servers import Upstream, free_port, home_env, running

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
HI = [{"role": "user", "content": "hello example"}]


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running(Upstream()) as url:
        yield url


@pytest.fixture
def thanos_config(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "thanos.toml"
    path.write_text(openai_compatible("local", upstream, "m"))
    return path


@asynccontextmanager
async def example(target: str, config: Path) -> AsyncIterator[str]:
    """Run `uvicorn target` as a subprocess; yield its base URL; stop it with SIGINT."""
    port = free_port()
    log = config.parent / "uvicorn.log"
    env = {**os.environ, **home_env(config.parent), "THANOS_CONFIG": str(config)}
    env["DJANGO_DB"] = str(config.parent / "db")
    command = ["-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--lifespan", "on", "--log-level", "warning"]
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, cwd=ROOT, env=env, stdout=output, stderr=output
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _until_up(url, process, log)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
    text = _read(log)
    assert process.returncode == 0, text
    assert "Unclosed" not in text and "Traceback" not in text, text


async def _until_up(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    async with httpx2.AsyncClient(base_url=url) as http:
        for _ in range(3000):
            assert process.returncode is None, _read(log)
            try:
                await http.get("/")
                return
            except httpx2.TransportError:
                await asyncio.sleep(0.01)
    raise AssertionError(f"{url} did not start: {_read(log)}")


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def chat_and_stream(base_url: str, api_key: str = "unused") -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0) as client:
        reply = await client.chat.completions.create(model="local/m", messages=HI)
        assert reply.choices[0].message.content == "echo: hello example"
        stream = await client.chat.completions.create(
            model="local/m", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "echo:helloexample"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12


async def test_standalone(thanos_config: Path) -> None:
    async with example("examples.standalone.app:app", thanos_config) as url:
        await chat_and_stream(f"{url}/v1")
        async with httpx2.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}


async def test_fastapi_mount_behind_the_hosts_auth(thanos_config: Path) -> None:
    async with example("examples.fastapi_mount.app:app", thanos_config) as url:
        await chat_and_stream(f"{url}/ai/v1", api_key="alice-token")
        async with httpx2.AsyncClient(base_url=url) as http:
            anonymous = await http.get("/ai/v1/models")
            wrong = await http.get("/ai/v1/models", headers={"authorization": "Bearer nope"})
            alice = {"authorization": "Bearer alice-token"}
            models = await http.get("/ai/v1/models", headers=alice)
            question = {"question": "what now", "model": "local/m"}
            asked = await http.post("/ask", json=question, headers=alice)
            unknown = {"question": "what now", "model": "no-such-model"}
            refused = await http.post("/ask", json=unknown, headers=alice)
            home = await http.get("/")
    assert anonymous.status_code in (401, 403) and "detail" in anonymous.json()
    assert wrong.status_code == 401 and wrong.json() == {"detail": "unknown token"}
    assert "local/m" in {m["id"] for m in models.json()["data"]}
    assert asked.json() == {"user": "alice", "answer": "echo: what now"}
    assert refused.status_code == 404  # the gateway's own status, not a 500
    assert refused.json()["error"]["code"] == "model_not_found"
    assert refused.headers["x-thanos-attempts"] == ""
    assert home.json()["gateway"] == "/ai/v1"


async def test_django_project_with_the_gateway_at_ai(thanos_config: Path) -> None:
    async with example("examples.django_project.asgi:application", thanos_config) as url:
        await chat_and_stream(f"{url}/ai/v1")
        async with httpx2.AsyncClient(base_url=url) as http:
            home = await http.get("/")
            models = await http.get("/ai/v1/models")
    assert home.status_code == 200 and home.text.startswith("Hello from Django")
    assert "local/m" in {m["id"] for m in models.json()["data"]}


async def test_starlette_stack_runs_custom_middleware_in_order(thanos_config: Path) -> None:
    async with example("examples.starlette_stack.app:app", thanos_config) as url:
        await chat_and_stream(f"{url}/ai/v1")
        async with httpx2.AsyncClient(base_url=url) as http:
            body = {"model": "local/m", "messages": HI}
            plain = await http.post("/ai/v1/chat/completions", json=body)
            streamed = await http.post("/ai/v1/chat/completions", json={**body, "stream": True})
            home = await http.get("/")
    assert home.status_code == 200
    for response in (plain, streamed):
        names = [name.lower() for name, _ in response.headers.raw]
        order = [names.index(n) for n in (b"x-audit", b"x-request-id", b"server-timing")]
        assert order == sorted(order)  # innermost layer's header first
        assert response.headers["x-audit"] == f"{response.headers['x-request-id']} anonymous"
        assert response.headers["server-timing"].startswith("gateway;dur=")


async def test_custom_provider_kind(tmp_path: Path) -> None:
    from examples.custom_provider import acme_server

    async with running(acme_server.app) as acme:
        config = tmp_path / "thanos.toml"  # `acme` implies the kind the example registers
        config.write_text(f'[providers.acme]\nbase_url = "{acme}"\napi_key = "{acme_server.KEY}"\n')
        async with (
            example("examples.custom_provider.app:app", config) as url,
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        ):
            reply = await client.chat.completions.create(model="acme-small", messages=HI)  # type: ignore[arg-type]
            stream = await client.chat.completions.create(
                model="acme/acme-large",
                messages=HI,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            models = {model.id async for model in client.models.list()}
    assert reply.choices[0].message.content == "Acme says: user: hello example"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.total_tokens) == (
        3,
        8,
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len(pieces) >= 5 and "".join(pieces) == "Acme says: user: hello example"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert {"acme/acme-small", "acme/acme-large"} <= models
