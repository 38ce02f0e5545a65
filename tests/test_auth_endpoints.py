"""`/auth/*` over HTTP and `initiate_oauth`, and the Anthropic adapter with an OAuth login,
against fake GitHub and Anthropic servers over loopback; status never shows a token."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_oauth import FakeOAuth, login_gateway
from tests.helpers import ADMIN, ADMIN_AND_USER, USER, client_for
from thanos_asgi import Gateway, build_app
from thanos_asgi.frontends.login_endpoints import initiate_oauth
from thanos_asgi.logins import FileStore, Token
from thanos_asgi.providers._login import CLAUDE_CODE

pytestmark = pytest.mark.anyio


def gateway(fake: FakeOAuth, store: FileStore, extra: str = "") -> Gateway:
    gw = login_gateway(fake, store, extra, retry_delays=(0.01,))
    assert gw.providers["anthropic"].session is None  # type: ignore[attr-defined]  # API key
    return gw


def no_secrets(fake: FakeOAuth, text: str) -> None:
    for secret in fake.secrets():
        assert secret not in text and secret[-12:] not in text


async def anthropic_login(http: Any, fake: FakeOAuth) -> dict[str, Any]:
    started = (await http.post("/auth/anthropic", json={})).json()
    async with httpx.AsyncClient() as browser:
        pasted = (await browser.get(started["auth_url"])).text
    assert pasted.endswith("#" + started["state"])
    done = await http.post("/auth/anthropic", json={"code": pasted})
    assert done.status_code == 200, done.text
    return dict(done.json())


async def test_github_login_completes_in_the_background(
    fake: FakeOAuth, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.poll_script = ["authorization_pending", "authorization_pending"]
    async with gateway(fake, FileStore(tmp_path)) as gw, client_for(build_app(gw)) as http:
        started = await http.post("/auth/github")
        assert started.status_code == 200
        body = started.json()
        assert body["user_code"] == "ABCD-1234"
        assert body["verification_uri"] == body["auth_url"] == f"{fake.base}/login/device"
        assert (await http.get("/auth/status")).json()["copilot"]["login_flow"] == "pending"
        for _ in range(200):
            status = (await http.get("/auth/status")).json()
            if status["copilot"]["logged_in"]:
                break
            await asyncio.sleep(0.02)
        copilot = status["copilot"]
        assert copilot["logged_in"] is True and copilot["providers"] == ["copilot"]
        assert copilot["identity"].startswith("gh****") and copilot["expires_at"] > 0
        assert status["anthropic"]["logged_in"] is False
        assert "thanos auth login anthropic" in status["anthropic"]["login_required"]
        chat = {"model": "copilot/gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
        no_secrets(fake, str(status) + (await http.get("/health/ready")).text + caplog.text)
    assert "copilot: logged in as gh****" in caplog.text


async def test_anthropic_login_and_oauth_requests(fake: FakeOAuth, tmp_path: Path) -> None:
    async with gateway(fake, FileStore(tmp_path)) as gw, client_for(build_app(gw)) as http:
        done = await anthropic_login(http, fake)
        assert done["logged_in"] is True and done["identity"].startswith("sk****")
        chat = {
            "model": "anthropic_max/claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}],
        }
        answer = await http.post("/v1/chat/completions", json=chat)
        assert answer.json()["choices"][0]["message"]["content"] == "claude says hi"
        chat["model"] = "anthropic/claude-sonnet-4-5"
        api_key_answer = await http.post("/v1/chat/completions", json=chat)
        assert api_key_answer.status_code == 502  # the fake takes only OAuth tokens
        status = (await http.get("/auth/status")).json()
    oauth, api_key = fake.headers["/v1/messages"]
    access = oauth["authorization"].removeprefix("Bearer ")
    assert access in fake.access_tokens and "x-api-key" not in oauth
    assert "oauth-2025-04-20" in oauth["anthropic-beta"].split(",")
    assert oauth["user-agent"].startswith("claude-cli/") and oauth["anthropic-version"]
    assert fake.queries["/v1/messages"][0] == "beta=true"
    assert fake.bodies["/v1/messages"][0]["system"][0] == {"type": "text", "text": CLAUDE_CODE}
    assert api_key["x-api-key"] == "sk-ant-api03-APIKEY-0123456789"  # the API-key path as before
    assert "authorization" not in api_key and fake.queries["/v1/messages"][1] == ""
    assert status["anthropic"]["providers"] == ["anthropic_max"]
    no_secrets(fake, str(status) + str(done))


async def test_revoked_anthropic_login_is_503_with_the_command(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    store = FileStore(tmp_path)
    async with gateway(fake, store) as gw, client_for(build_app(gw)) as http:
        await anthropic_login(http, fake)
        stored = store.load("anthropic")
        assert stored is not None
        store.save("anthropic", Token(stored.access_token, stored.refresh_token, 0.0, "sk****"))
        gw.providers["anthropic_max"].session.reload()  # type: ignore[attr-defined]
        fake.revoke()
        chat = {
            "model": "anthropic_max/claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}],
        }
        refused = await http.post(
            "/v1/chat/completions", json=chat, headers={"x-thanos-fallback": "off"}
        )
        assert refused.status_code == 503
        message = refused.json()["error"]["message"]
        assert "login required" in message and "run `thanos auth login anthropic`" in message
        assert store.load("anthropic") is None
        again = await http.post("/v1/messages", json={**chat, "max_tokens": 5})
        assert again.status_code == 503 and "thanos auth login anthropic" in again.text
        no_secrets(fake, refused.text + again.text + (await http.get("/auth/status")).text)
        await anthropic_login(http, fake)  # logging in again opens it at once
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200


async def test_wrong_codes_and_unknown_logins(fake: FakeOAuth, tmp_path: Path) -> None:
    async with gateway(fake, FileStore(tmp_path)) as gw, client_for(build_app(gw)) as http:
        await http.post("/auth/anthropic", json={})
        wrong = await http.post("/auth/anthropic", json={"code": "abc#not-the-state"})
        assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "login_error"
        bad = await http.post("/auth/anthropic", json={"code": 5})
        assert bad.status_code == 400
        unknown = await http.post("/auth/github", json={"provider": "nope"})
        assert unknown.status_code == 404
        assert (await http.get("/auth/github")).status_code == 405


async def test_auth_paths_need_an_admin_key(fake: FakeOAuth, tmp_path: Path) -> None:
    async with (
        gateway(fake, FileStore(tmp_path), ADMIN_AND_USER) as gw,
        client_for(build_app(gw)) as http,
    ):
        assert (await http.get("/auth/status")).status_code == 401
        user = {"authorization": f"Bearer {USER}"}
        assert (await http.get("/auth/status", headers=user)).status_code == 403
        assert (await http.post("/auth/anthropic", headers=user)).status_code == 403
        admin = {"authorization": f"Bearer {ADMIN}"}
        assert (await http.get("/auth/status", headers=admin)).status_code == 200


async def test_initiate_oauth_for_grpc(fake: FakeOAuth, tmp_path: Path) -> None:
    fake.poll_script = ["authorization_pending"] * 1000  # nobody approves: stays pending
    async with gateway(fake, FileStore(tmp_path)) as gw:
        github = await initiate_oauth(gw, "github_copilot")
        assert github["user_code"] == "ABCD-1234" and github["state"] == ""
        assert github["auth_url"] == f"{fake.base}/login/device" and github["expires_in"] == 5
        claude = await initiate_oauth(gw, "anthropic_max")
        assert claude["auth_url"].startswith(f"{fake.base}/oauth/authorize?")
        assert claude["state"] and claude["user_code"] == "" and claude["expires_in"] > 500
        assert (await initiate_oauth(gw, "anthropic"))["provider"] == "anthropic"
