"""The Copilot provider against fake GitHub and Copilot servers over loopback: the headers
Copilot requires, token renewal before expiry, single-flight renewal under load, logins that
are missing or revoked (503 naming the command; fallbacks move on), and GitHub Enterprise."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.fake_oauth import FakeOAuth
from tests.helpers import client_for
from tests.upstreams import completion
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.config import parse_config
from thanos_asgi.exceptions import UpstreamStatusError
from thanos_asgi.logins import CopilotAuth, CopilotSettings, FileStore, Session, Token
from thanos_asgi.providers.copilot import Copilot
from thanos_asgi.types import ChatRequest, ImagePart, ImageURL, Message, TextPart

pytestmark = pytest.mark.anyio
COPILOT = '[providers.copilot]\nmodel = "gpt-4o"\n'


async def login(fake: FakeOAuth, store: FileStore, expires_at: float | None = None) -> Token:
    """A Copilot login as `thanos auth login copilot` leaves it (optionally aged)."""
    auth = CopilotAuth(fake.copilot_settings())
    token = await auth.login(await auth.device_code())
    await auth.aclose()
    if expires_at is not None:
        token = Token(token.access_token, token.refresh_token, expires_at, token.identity, {})
    store.save("copilot", token)
    return token


def gateway(
    fake: FakeOAuth, store: FileStore, text: str = COPILOT, **transports: object
) -> Gateway:
    chain = '["copilot", "openai"]' if "providers.openai" in text else '["copilot"]'
    routing = f"[routing]\nmax_retries = 0\nfallback_chain = {chain}\n"
    config = parse_config(text + routing, source="t.toml", env={})
    gw = Gateway(config, transport=HttpxTransport(httpx.AsyncClient()), transports=transports)  # type: ignore[arg-type]
    provider = gw.providers["copilot"]
    assert isinstance(provider, Copilot)
    auth = CopilotAuth(fake.copilot_settings())
    provider.session = Session("copilot", store, auth, retry_delays=(0.01,))
    return gw


def ask(text: str = "hi", *history: Message) -> ChatRequest:
    return ChatRequest(
        model="copilot/gpt-4o", messages=[*history, Message(role="user", content=text)]
    )


async def test_copilot_sends_the_headers_it_requires(fake: FakeOAuth, tmp_path: Path) -> None:
    token = await login(fake, FileStore(tmp_path))
    async with gateway(fake, FileStore(tmp_path)) as gw:
        answer = await gw.chat(ask())
        await gw.chat(ask("more", Message(role="assistant", content="earlier")))
        image = ImagePart(image_url=ImageURL(url="data:image/png;base64,AA=="))
        await gw.chat(ask("", Message(role="user", content=[TextPart(text="see"), image])))
    assert answer.choices[0].message.content == "copilot says hi"
    first, agent, vision = fake.headers["/chat/completions"]
    assert first["authorization"] == f"Bearer {token.access_token}"
    assert first["copilot-integration-id"] == "vscode-chat"
    assert first["editor-version"].startswith("vscode/")
    assert first["editor-plugin-version"].startswith("copilot-chat/")
    assert first["user-agent"].startswith("GitHubCopilotChat/")
    assert first["openai-intent"] == "conversation-panel"
    assert first["x-github-api-version"] == "2025-04-01"
    assert first["x-initiator"] == "user" and "copilot-vision-request" not in first
    assert first["x-request-id"] != agent["x-request-id"]
    assert agent["x-initiator"] == "agent"
    assert vision["copilot-vision-request"] == "true"
    assert fake.calls["/copilot_internal/v2/token"] == 1  # only the login's own exchange


async def test_the_copilot_token_is_renewed_before_it_expires(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    store = FileStore(tmp_path)
    old = await login(fake, store, expires_at=time.time() + 120)  # inside the 5-minute margin
    async with gateway(fake, store) as gw:
        await gw.chat(ask())
        await gw.chat(ask())
    assert fake.calls["/copilot_internal/v2/token"] == 2
    sent = {h["authorization"] for h in fake.headers["/chat/completions"]}
    renewed = store.load("copilot")
    assert renewed is not None and renewed.access_token != old.access_token
    assert sent == {f"Bearer {renewed.access_token}"}
    assert renewed.refresh_token == old.refresh_token  # the GitHub token itself stays


async def test_fifty_requests_with_an_expired_token_renew_once(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    store = FileStore(tmp_path)
    await login(fake, store, expires_at=0.0)
    fake.delay = 0.1
    async with gateway(fake, store) as gw:
        answers = await asyncio.gather(*(gw.chat(ask(f"n{i}")) for i in range(50)))
    assert len(answers) == 50
    assert fake.calls["/copilot_internal/v2/token"] == 2  # the login's, then exactly one renewal
    assert len({h["authorization"] for h in fake.headers["/chat/completions"]}) == 1


def openai_upstream() -> HttpxTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion("gpt-4o-mini", "openai says hi"))

    return HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))


FALLBACK = COPILOT + '[providers.openai]\napi_key = "k"\nmodel = "gpt-4o-mini"\n'


async def test_no_login_is_503_naming_the_command_and_fallback_moves_on(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    gw = gateway(fake, FileStore(tmp_path), FALLBACK, openai=openai_upstream())
    async with client_for(build_app(gw)) as http:
        body = {"model": "copilot/gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        alone = await http.post(
            "/v1/chat/completions", json=body, headers={"x-thanos-fallback": "off"}
        )
        assert alone.status_code == 503
        error = alone.json()["error"]
        assert error["code"] == "login_required"
        assert "run `thanos auth login copilot`" in error["message"]
        moved_on = await http.post("/v1/chat/completions", json=body)
        assert moved_on.status_code == 200
        assert moved_on.headers["x-thanos-provider"] == "openai"
        assert moved_on.headers["x-thanos-attempts"] == "copilot:login_required,openai:ok"
        ready = (await http.get("/health/ready")).json()["providers"]["copilot"]
        assert ready["configured"] is False and ready["login"]["logged_in"] is False
    await gw.aclose()


async def test_a_revoked_github_token_means_login_required(fake: FakeOAuth, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await login(fake, store, expires_at=0.0)
    fake.revoke()
    async with gateway(fake, store) as gw:
        with pytest.raises(Exception) as refused:
            await gw.chat(ask())
        assert getattr(refused.value, "status", None) == 503
        assert "thanos auth login copilot" in str(refused.value)
        assert store.load("copilot") is None
        assert gw.status()["copilot"]["configured"] is False
    for secret in fake.secrets():
        assert secret not in str(refused.value)


async def test_a_refused_copilot_token_is_renewed_for_the_next_request(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    store = FileStore(tmp_path)
    await login(fake, store)
    fake.copilot_tokens.clear()  # GitHub stopped honouring it before its expiry
    async with gateway(fake, store) as gw:
        with pytest.raises(UpstreamStatusError) as refused:
            await gw.chat(ask())
        assert "rejected its login token" in refused.value.message
        assert (await gw.chat(ask())).choices[0].message.content == "copilot says hi"
    assert fake.calls["/copilot_internal/v2/token"] == 2


async def test_models_come_from_the_copilot_api(fake: FakeOAuth, tmp_path: Path) -> None:
    await login(fake, FileStore(tmp_path))
    async with gateway(fake, FileStore(tmp_path)) as gw:
        assert await gw.providers["copilot"].list_models() == ["gpt-4o", "claude-sonnet-4"]


def test_github_enterprise_urls_follow_the_base_url() -> None:
    settings = CopilotSettings.for_base_url("https://copilot-api.ghe.example.com")
    assert settings.github_url == "https://ghe.example.com"
    assert settings.api_url == "https://api.ghe.example.com"
    assert settings.copilot_url == "https://copilot-api.ghe.example.com"
    public = CopilotSettings.for_base_url(None)
    assert (public.github_url, public.api_url) == ("https://github.com", "https://api.github.com")
    assert CopilotSettings.for_base_url("https://api.githubcopilot.com").api_url == (
        "https://api.github.com"
    )
