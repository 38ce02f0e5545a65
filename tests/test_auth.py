"""Client keys: the middleware alone, the key store, allow-lists, and the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import BASIC, client_for, gateway
from tests.upstreams import FakeOpenAI
from thanos_asgi import build_app
from thanos_asgi.config import ClientKeyConfig
from thanos_asgi.frontends.asgi import Receive, Scope, Send
from thanos_asgi.frontends.middleware.auth import AuthMiddleware
from thanos_asgi.governance.keys import KeyRing, KeyStore, digest

pytestmark = pytest.mark.anyio
SECRET = "thk_user-secret-0123456789abcdefghij"
ADMIN = "thk_admin-secret-0123456789abcdefghi"


async def echo_auth(scope: Scope, receive: Receive, send: Send) -> None:
    auth = scope.get("thanos.auth")
    body = json.dumps({"key_id": auth["key_id"] if auth else None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def ring() -> KeyRing:
    return KeyRing(
        [
            ClientKeyConfig(id="user", key=SECRET),
            ClientKeyConfig(id="admin", key_hash=digest(ADMIN), admin=True),
        ]
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_without_keys_everything_passes() -> None:
    async with client(AuthMiddleware(echo_auth, keyring=KeyRing([]))) as http:
        response = await http.get("/v1/models")
    assert response.json() == {"key_id": None}


@pytest.mark.parametrize(
    ("headers", "status", "key_id"),
    [
        ({}, 401, None),
        ({"authorization": "Bearer wrong"}, 401, None),
        ({"authorization": f"Basic {SECRET}"}, 401, None),
        ({"authorization": f"Bearer {SECRET}"}, 200, "user"),
        ({"x-api-key": SECRET}, 200, "user"),
        ({"authorization": f"bearer {ADMIN}"}, 200, "admin"),
    ],
)
async def test_keys_are_checked(headers: dict[str, str], status: int, key_id: str | None) -> None:
    async with client(AuthMiddleware(echo_auth, keyring=ring())) as http:
        response = await http.post("/v1/chat/completions", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"key_id": key_id}
    else:
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"
        assert SECRET not in response.text


async def test_admin_paths_need_an_admin_key_and_health_is_open() -> None:
    async with client(AuthMiddleware(echo_auth, keyring=ring())) as http:
        denied = await http.get("/v1/usage", headers={"authorization": f"Bearer {SECRET}"})
        allowed = await http.get("/v1/usage", headers={"authorization": f"Bearer {ADMIN}"})
        health = await http.get("/health")
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
    assert allowed.status_code == 200
    assert health.status_code == 200


async def test_anthropic_paths_get_anthropic_errors() -> None:
    async with client(AuthMiddleware(echo_auth, keyring=ring())) as http:
        response = await http.post("/v1/messages")
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"


async def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert ring().lookup(SECRET) is not None
    assert calls and all(a.startswith("sha256:") for a, _ in calls)


def test_key_store_keeps_only_digests(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    secret = store.create("ci", rpm=10, models=["openai/*"])
    assert secret.startswith("thk_") and len(secret) > 40
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in raw
    assert stat.S_IMODE(os.stat(tmp_path / "keys.db").st_mode) == 0o600
    keyring = KeyRing([], store)
    policy = keyring.lookup(secret)
    assert policy is not None and policy.rpm == 10 and policy.models == ("openai/*",)
    listing = store.listing()
    assert listing[0]["id"] == "ci" and "hash" not in listing[0]
    assert store.revoke("ci") and not store.revoke("ci")
    keyring._checked = 0.0  # skip the one-second reload pause
    assert keyring.lookup(secret) is None  # a revoked key stops working without a restart


async def test_model_allow_list_is_enforced_by_the_gateway() -> None:
    text = BASIC + (
        f'\n[[server.keys]]\nid = "narrow"\nkey = "{SECRET}"\nmodels = ["openai/gpt-4o-mini"]\n'
    )
    upstream = FakeOpenAI()
    app = build_app(gateway(upstream, text))
    headers = {"authorization": f"Bearer {SECRET}"}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with client_for(app) as http:
        ok = await http.post(
            "/v1/chat/completions", json={**body, "model": "openai/gpt-4o-mini"}, headers=headers
        )
        denied = await http.post(
            "/v1/chat/completions", json={**body, "model": "deepseek-chat"}, headers=headers
        )
        anonymous = await http.post(
            "/v1/chat/completions", json={**body, "model": "openai/gpt-4o-mini"}
        )
    assert ok.status_code == 200
    assert denied.status_code == 403 and "narrow" in denied.json()["error"]["message"]
    assert anonymous.status_code == 401
    assert len(upstream.requests) == 1


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}

    def thanos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "thanos_asgi", "keys", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=30,
        )

    created = thanos("create", "laptop", "--rpm", "60", "--admin")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("thk_") and "only time" in created.stderr
    listed = thanos("list")
    assert "laptop\tactive\tadmin=True\trpm=60" in listed.stdout and secret not in listed.stdout
    assert thanos("revoke", "laptop").returncode == 0
    assert "laptop\trevoked" in thanos("list").stdout
    assert thanos("revoke", "laptop").returncode == 1
