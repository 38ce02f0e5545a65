"""A first run as a new user makes it: `thanos serve` with no config file and only
OPENAI_API_KEY (and OPENAI_BASE_URL, as the OpenAI SDK reads it) in the environment; the
startup banner; `thanos init`; the warning for secrets written into a config file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import openai
import pytest
from anyio.abc import Process

from tests.servers import Upstream, free_port, running
from thanos_asgi.cli import main
from thanos_asgi.config import load_config, parse_config
from thanos_asgi.governance.pricing import PriceTable
from thanos_asgi.server.banner import self_loops

pytestmark = pytest.mark.anyio
KEY = "sk-first-run-SECRET-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]


def bare_env(home: Path, **variables: str) -> dict[str, str]:
    """Only PATH, a HOME and XDG dirs under `home`, and `variables`."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        **variables,
    }


@asynccontextmanager
async def first_run(
    tmp_path: Path, env: dict[str, str], *flags: str
) -> AsyncIterator[tuple[str, Process, Path]]:
    """`thanos serve --port <free>` with no config file, run in an empty directory; yields
    its URL once it answers, the process and its log."""
    port, log = free_port(), tmp_path / "serve.log"
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "thanos_asgi", "serve", "--port", str(port), *flags]
    with log.open("wb") as out:
        process = await anyio.open_process(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
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


@pytest.mark.skipif(Path("/etc/thanos/config.toml").exists(), reason="a system config exists")
async def test_first_run_with_only_an_openai_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    upstream = Upstream()
    async with running(upstream) as fake:
        env = bare_env(home, OPENAI_API_KEY=KEY, OPENAI_BASE_URL=f"{fake}/v1")
        async with first_run(tmp_path, env) as (url, _, log):
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                listed = (await http.get("/v1/models")).json()["data"]
                ready = await http.get("/health/ready")
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(model="auto", messages=HI)
            await client.close()
    ids = [model["id"] for model in listed]
    catalogue = PriceTable.load_bundled().models("openai")
    assert len(catalogue) > 20 and set(ids) >= {f"openai/{model}" for model in catalogue}
    assert "openai/gpt-4o-mini" in ids
    assert ready.status_code == 200 and ready.json()["providers"]["openai"]["serving"] is True
    assert raw.headers["x-thanos-provider"] == "openai"
    assert raw.parse().choices[0].message.content == "echo: hi"
    assert upstream.bodies[-1]["model"] == "gpt-4o-mini"  # `auto`: openai's default model
    text = log.read_text()
    print(text)  # the first-run banner, for the record
    assert KEY not in text
    looked = f"{home}/.config/thanos/config.toml"
    assert f"config: no file found (looked for thanos.toml, {looked}" in text
    assert (
        "providers: ollama (no key needed, http://localhost:11434, models listed live), "
        f"openai (key from OPENAI_API_KEY, {fake}/v1, {len(catalogue)} models)"
    ) in text
    assert f"models: {len(catalogue)} configured; 'auto' -> openai/gpt-4o-mini" in text
    assert f"listening: {url}, gRPC off" in text
    assert f"client keys: none; anyone who can reach {url} may use it" in text


async def test_not_ready_when_only_an_unreachable_ollama_is_configured(tmp_path: Path) -> None:
    env = bare_env(tmp_path / "home", OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    async with (
        first_run(tmp_path, env) as (url, _, log),
        httpx.AsyncClient(base_url=url, timeout=20) as http,
    ):
        ready = await http.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert ready.json()["providers"]["ollama"]["serving"] is False
    assert "providers: ollama (no key needed" in log.read_text()


def test_anthropic_base_url_is_honoured_with_no_config_file(tmp_path: Path) -> None:
    env = bare_env(tmp_path, ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL="http://127.0.0.1:9/x")
    anthropic = load_config(env=env).providers["anthropic"]
    assert (anthropic.base_url, anthropic.credential) == ("http://127.0.0.1:9/x", KEY)
    assert anthropic.model == "claude-sonnet-4-5"


def test_init_writes_a_commented_starter_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    path = tmp_path / "thanos.toml"
    assert main(["init", str(path)]) == 0
    text = path.read_text()
    assert KEY not in text and 'api_key = "${OPENAI_API_KEY}"' in text
    assert "# [providers.anthropic]" in text and text.count("\n#") > 10
    config = parse_config(text, source=str(path), env={"OPENAI_API_KEY": KEY})
    assert config.providers["openai"].credential == KEY
    assert config.fallback_chain() == ["openai", "ollama"]
    path.write_text("# mine\n")
    assert main(["init", str(path)]) == 1
    assert path.read_text() == "# mine\n"
    assert "exists" in capsys.readouterr().err


def test_literal_secrets_in_a_file_are_accepted_with_a_warning_naming_the_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = (
        '[server]\nkeys = [{ id = "a", key = "thk-literal-0123456789" }]\n'
        '[providers.openai]\napi_key = "sk-literal-0123456789"\n'
        '[providers.groq]\napi_key = "${GROQ_API_KEY}"\n'
        'headers = { "x-api-key" = "hdr-literal-0123456789", "x-team" = "blue" }\n'
    )
    with caplog.at_level(logging.WARNING, logger="thanos_asgi.config"):
        config = parse_config(text, source="t.toml", env={"GROQ_API_KEY": "g"})
    assert config.providers["openai"].credential == "sk-literal-0123456789"
    [record] = caplog.records
    message = record.getMessage()
    assert "t.toml" in message and "literal" not in message.replace("plain text", "")
    for path in ("providers.openai.api_key", "server.keys[0].key", "providers.groq.headers."):
        assert path in message
    assert "groq.api_key" not in message and "x-team" not in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="thanos_asgi.config"):
        parse_config('[providers.openai]\napi_key = "${OPENAI_API_KEY}"\n', source="t", env={})
    assert caplog.records == []


def test_a_base_url_pointing_at_the_gateway_itself_is_warned_about(tmp_path: Path) -> None:
    env = bare_env(tmp_path, OPENAI_API_KEY=KEY, OPENAI_BASE_URL="http://localhost:8080/v1")
    config = load_config(env=env)
    [warning] = self_loops(config, ("127.0.0.1", 8080))
    assert "provider openai points at this gateway's own address" in warning
    assert self_loops(config, ("127.0.0.1", 8081)) == []
