"""The `thanos` command and `uvicorn thanos_asgi:app`, run as a user would run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seed-configs"
SECRET = "sk-ant-SECRET-abcdefghijklmnop"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thanos_asgi", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG")}
    return {**keep, "HOME": str(tmp_path), **extra}


@pytest.mark.parametrize(
    "seed", sorted(p.name for p in SEEDS.glob("*.toml") if "multiline" not in p.name)
)
def test_check_accepts_every_seed_config_and_masks_keys(seed: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path, ANTHROPIC_API_KEY=SECRET, OPENAI_API_KEY=SECRET)
    result = run("check", str(SEEDS / seed), env=env)
    assert result.returncode == 0, result.stderr
    assert seed in result.stdout
    assert "SECRET" not in result.stdout + result.stderr


def test_check_refuses_the_multiline_inline_table(tmp_path: Path) -> None:
    result = run(
        "check", str(SEEDS / "hybrid-multiline-inline-table.toml"), env=clean_env(tmp_path)
    )
    assert result.returncode == 2
    assert "hybrid-multiline-inline-table.toml" in result.stderr
    assert "line 36" in result.stderr and "inline table" in result.stderr


def test_check_without_any_config_uses_defaults(tmp_path: Path) -> None:
    result = run("check", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ollama" in result.stdout and "openai" not in result.stdout
    result = run("check", env=clean_env(tmp_path, OPENAI_API_KEY=SECRET), cwd=tmp_path)
    assert "openai" in result.stdout and "SECRET" not in result.stdout


def test_serve_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    result = run("serve", "--host", "0.0.0.0", "--port", "1", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "--allow-unauthenticated" in result.stderr


def test_models_offline_lists_configured_models(tmp_path: Path) -> None:
    config = tmp_path / "thanos.toml"
    config.write_text(
        '[providers.ollama]\nmodels = ["llama3:8b"]\n'
        '[routing]\naliases = { fast = "ollama/llama3:8b" }\n'
    )
    result = run("models", "--offline", "--config", str(config), env=clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ollama/llama3:8b", "fast"]


@contextmanager
def serving(command: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not start")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=15)[0].decode()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert process.returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output


def test_thanos_serve_answers_and_shuts_down(tmp_path: Path) -> None:
    config = tmp_path / "thanos.toml"
    config.write_text(
        f'[providers.ollama]\nbase_url = "http://127.0.0.1:{free_port()}"\nmodel = "llama3:8b"\n'
    )
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "thanos_asgi",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
    ]
    with serving(command, clean_env(tmp_path), port) as url:
        ready = httpx.get(f"{url}/health/ready")  # no provider can serve: not ready
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert ready.json()["providers"]["ollama"]["serving"] is False
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "llama3:8b", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 502  # nothing listens where ollama should be
        assert chat.json()["error"]["code"] == "upstream_unreachable"
        assert chat.headers["x-request-id"]


def test_uvicorn_thanos_asgi_app_finds_its_config(tmp_path: Path) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('[providers.ollama]\nmodels = ["phi3:mini"]\n')
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "thanos_asgi:app", "--port", str(port)]
    with serving(command, clean_env(tmp_path, THANOS_CONFIG=str(config)), port) as url:
        models = httpx.get(f"{url}/v1/models").json()
        assert "ollama/phi3:mini" in [m["id"] for m in models["data"]]


def test_uvicorn_app_with_a_bad_config_fails_at_startup(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[providers.ollama]\nmodle = 'x'\n")
    port = free_port()
    env = clean_env(tmp_path, THANOS_CONFIG=str(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "thanos_asgi:app",
            "--port",
            str(port),
            "--lifespan",
            "on",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "modle" in result.stderr and "bad.toml" in result.stderr


# -- usage, check and keys: what an operator reads ----------------------------------------


def test_usage_money_days_and_csv(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from thanos_asgi.governance.ledger import Ledger, LedgerRow

    now = time.time()
    with Ledger(tmp_path / ".local/share/thanos/usage.db") as ledger:  # where serve keeps it
        spent = [(now, 0.0000132), (now, 0.0000132), (now - 3 * 86400, 1.5)]
        for i, (ts, cost) in enumerate(spent):
            ledger.record(LedgerRow(ts, f"r{i}", "team", "openai", "gpt-4o", 5, 7, cost_usd=cost))
    env = clean_env(tmp_path)
    today = run("usage", "--days", "0", env=env, cwd=tmp_path)
    assert today.returncode == 0, today.stderr
    (line,) = today.stdout.splitlines()  # today only
    day = datetime.now(UTC).date().isoformat()
    assert line.startswith(f"day={day}\trequests=2\t") and "cost_usd=0.00002640\t" in line
    assert "e-05" not in today.stdout
    assert len(run("usage", "--days", "3", env=env, cwd=tmp_path).stdout.splitlines()) == 2
    assert len(run("usage", env=env, cwd=tmp_path).stdout.splitlines()) == 2
    assert "cost_usd=1.500\t" in run("usage", "--by", "day", env=env, cwd=tmp_path).stdout
    assert run("usage", "--days", "-1", env=env, cwd=tmp_path).returncode == 2
    csv_lines = run("usage", "--csv", "--days", "0", env=env, cwd=tmp_path).stdout.splitlines()
    assert csv_lines[0].startswith("ts,request_id,") and len(csv_lines) == 3
    stamp = csv_lines[1].split(",")[0]
    assert stamp.startswith(f"{day}T") and stamp.endswith("+00:00")
    assert datetime.fromisoformat(stamp).timestamp() == pytest.approx(now, abs=0.001)


def test_check_counts_stored_keys_and_keys_list_shows_their_policy(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    config = tmp_path / "thanos.toml"
    config.write_text('[[server.keys]]\nid = "laptop"\nkey = "thk-config-0123456789abcdef"\n')
    created = run(
        "keys", "--config", str(config), "create", "team-a", "--model", "openai/*",
        "--model", "claude-sonnet-4-5", "--provider", "openai", "--tpm", "1000",
        "--budget-usd", "25", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert run("keys", "create", "ci", "--rpm", "5", env=env, cwd=tmp_path).returncode == 0
    checked = run("check", str(config), env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    store = tmp_path / ".local/share/thanos/keys.db"
    assert f"3 client keys (1 in the config, 2 in {store})" in checked.stdout
    listed = run("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()
    assert listed == [
        "team-a\tactive\tadmin=False\trpm=-\ttpm=1000\tbudget_usd=25.00"
        "\tmodels=openai/*,claude-sonnet-4-5\tproviders=openai",
        "ci\tactive\tadmin=False\trpm=5\ttpm=-\tbudget_usd=-\tmodels=*\tproviders=*",
    ]
