"""Logins: token stores (files, a real keyring backend), the GitHub device flow, the Anthropic
PKCE flow, single-flight refresh with retries and revocation, and the CLI end to end — all
against fake OAuth servers over loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import keyring
import pytest
from keyring.backends import fail
from keyrings.alt.file import PlaintextKeyring

from tests.fake_oauth import FakeOAuth
from thanos_asgi import ChatRequest, Gateway, Message
from thanos_asgi.config import load_config
from thanos_asgi.exceptions import UpstreamConnectError
from thanos_asgi.frontends.stack import with_local_files
from thanos_asgi.logins import (
    ClaudeAuth,
    CopilotAuth,
    FileStore,
    KeyringStore,
    LoginFailed,
    LoginRequired,
    MemoryStore,
    Session,
    Token,
    default_store,
    mask,
    split_paste,
)

pytestmark = pytest.mark.anyio
TOKEN = Token("sk-ant-oat01-ACCESS-0123456789", "sk-ant-ort01-REFRESH-0123456789", 1e10, "sk****89")


@pytest.fixture
def plaintext_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    """keyrings.alt's file backend, in a temporary folder, as the process's keyring."""
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


class TrustedPlaintext(PlaintextKeyring):
    priority = 5  # stands in for a real system keyring (Secret Service, Keychain, ...)


# -- stores -------------------------------------------------------------------------------


def test_file_store_is_private_and_survives_reopening(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "logins"
    FileStore(folder).save("anthropic", TOKEN)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "anthropic.json").stat().st_mode) == 0o600
    assert FileStore(folder).load("anthropic") == TOKEN
    assert [p.name for p in folder.iterdir()] == ["anthropic.json"]  # no temporary left
    os.chmod(folder / "anthropic.json", 0o644)
    assert FileStore(folder).load("anthropic") == TOKEN
    assert stat.S_IMODE((folder / "anthropic.json").stat().st_mode) == 0o600
    FileStore(folder).delete("anthropic")
    assert FileStore(folder).load("anthropic") is None
    FileStore(folder).delete("anthropic")  # logging out twice is fine
    with pytest.raises(ValueError):
        FileStore(folder).save("../evil", TOKEN)


def test_keyring_store_with_a_real_backend(plaintext_keyring: PlaintextKeyring) -> None:
    KeyringStore().save("copilot", TOKEN)
    assert Path(plaintext_keyring.file_path).exists()
    assert KeyringStore().load("copilot") == TOKEN  # a new store: survives a restart
    assert KeyringStore(plaintext_keyring).load("copilot") == TOKEN
    assert plaintext_keyring.get_password("thanos", "copilot") is not None  # service "thanos"
    KeyringStore().delete("copilot")
    assert KeyringStore().load("copilot") is None
    KeyringStore().delete("copilot")


def test_default_store_prefers_a_real_keyring(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    try:
        keyring.set_keyring(fail.Keyring())
        assert isinstance(default_store(tmp_path), FileStore)
        assert isinstance(default_store(None), MemoryStore)
        keyring.set_keyring(PlaintextKeyring())  # low priority: no better than our files
        assert isinstance(default_store(tmp_path), FileStore)
        trusted = TrustedPlaintext()
        trusted.file_path = str(tmp_path / "keyring.cfg")
        keyring.set_keyring(trusted)
        assert isinstance(default_store(tmp_path), KeyringStore)
    finally:
        keyring.set_keyring(previous)


def test_tokens_never_show_in_their_repr() -> None:
    assert "ACCESS" not in repr(TOKEN) and "REFRESH" not in repr(TOKEN)
    assert mask("gho_0123456789abcdef") == "gh****ef"
    assert mask("short") == "****"


# -- GitHub device flow -------------------------------------------------------------------


async def test_device_flow_waits_slows_down_and_logs_in(fake: FakeOAuth) -> None:
    fake.poll_script = ["authorization_pending", "slow_down", "authorization_pending"]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    auth = CopilotAuth(fake.copilot_settings(), sleep=sleep)
    code = await auth.device_code()
    assert (code.user_code, code.verification_uri) == ("ABCD-1234", f"{fake.base}/login/device")
    token = await auth.login(code)
    await auth.aclose()
    gaps = [b - a for a, b in zip(fake.poll_times, fake.poll_times[1:], strict=False)]
    assert len(fake.poll_times) == 4
    assert slept == [0.05, 0.05, 0.2, 0.2]  # slow_down: the server's new interval from then on
    assert min(gaps[1:]) >= 0.19
    assert token.access_token in fake.copilot_tokens
    assert token.refresh_token in fake.github_tokens  # the GitHub token renews Copilot tokens
    assert token.identity == mask(token.refresh_token) and token.extra["api"] == fake.base
    assert fake.bodies["/login/oauth/access_token"][0]["client_id"] == "Iv1.b507a08c87ecfe98"
    exchange = fake.headers["/copilot_internal/v2/token"][0]
    assert exchange["authorization"] == f"token {token.refresh_token}"
    assert exchange["editor-version"].startswith("vscode/")


@pytest.mark.parametrize("error", ["expired_token", "access_denied"])
async def test_device_flow_ends_clearly(fake: FakeOAuth, error: str) -> None:
    fake.poll_script = ["authorization_pending", error]
    auth = CopilotAuth(fake.copilot_settings())
    with pytest.raises(LoginFailed) as failed:
        await auth.login(await auth.device_code())
    await auth.aclose()
    assert failed.value.code == error
    assert ("expired" if error == "expired_token" else "denied") in failed.value.message


# -- Anthropic PKCE -----------------------------------------------------------------------


async def test_pkce_login_with_pasted_code(fake: FakeOAuth) -> None:
    auth = ClaudeAuth(fake.claude_settings())
    pending = auth.authorize()
    query = httpx.URL(pending.url).params
    assert query["code_challenge_method"] == "S256" and query["state"] == pending.state
    assert query["client_id"] == "9d1c250a-e61b-44d9-88ed-5944d1962f5e" and query["code"] == "true"
    assert pending.verifier not in pending.url
    async with httpx.AsyncClient() as browser:
        pasted = (await browser.get(pending.url)).text
    token = await auth.exchange(pending, pasted + "\n")  # the server checks the S256 verifier
    await auth.aclose()
    assert token.access_token in fake.access_tokens and token.refresh_token in fake.refresh_tokens
    assert token.expires_at is not None and token.identity.endswith(token.refresh_token[-2:])
    sent = fake.bodies["/v1/oauth/token"][0]
    assert sent["grant_type"] == "authorization_code" and sent["state"] == pending.state


async def test_pkce_refuses_a_code_from_another_attempt(fake: FakeOAuth) -> None:
    auth = ClaudeAuth(fake.claude_settings())
    first, second = auth.authorize(), auth.authorize()
    async with httpx.AsyncClient() as browser:
        pasted = (await browser.get(first.url)).text
    with pytest.raises(LoginFailed, match="another login"):
        await auth.exchange(second, pasted)
    with pytest.raises(LoginFailed):
        await auth.exchange(first, "#" + first.state)
    await auth.aclose()
    assert "/v1/oauth/token" not in fake.calls


def test_split_paste_takes_every_shape() -> None:
    assert split_paste(" abc#xyz \n") == ("abc", "xyz")
    assert split_paste("https://cb.test/callback?code=abc&state=xyz") == ("abc", "xyz")
    assert split_paste("code=abc&state=xyz") == ("abc", "xyz")


# -- sessions: refresh ----------------------------------------------------------------------


async def logged_in_claude(fake: FakeOAuth, store: MemoryStore, **options: object) -> Session:
    auth = ClaudeAuth(fake.claude_settings())
    pending = auth.authorize()
    async with httpx.AsyncClient() as browser:
        token = await auth.exchange(pending, (await browser.get(pending.url)).text)
    expired = Token(token.access_token, token.refresh_token, 0.0, token.identity)
    store.save("anthropic", expired)
    return Session("anthropic", store, auth, **options)  # type: ignore[arg-type]


async def test_fifty_concurrent_requests_refresh_once(fake: FakeOAuth) -> None:
    store = MemoryStore()
    session = await logged_in_claude(fake, store)
    old = store.load("anthropic")
    fake.delay = 0.1  # the refresh takes a while: every request arrives while it runs
    tokens = await asyncio.gather(*(session.access_token() for _ in range(50)))
    await session.aclose()
    assert fake.bodies["/v1/oauth/token"][1:] == [
        {"grant_type": "refresh_token", "refresh_token": old.refresh_token, "client_id": ANY_ID}
    ]
    assert len({t.access_token for t in tokens}) == 1 and session.refreshes == 1
    stored = store.load("anthropic")
    assert stored == tokens[0] and stored.refresh_token != old.refresh_token  # rotated, kept


ANY_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"


async def test_transient_failures_are_retried(fake: FakeOAuth) -> None:
    session = await logged_in_claude(fake, MemoryStore(), retry_delays=(0.01, 0.01))
    fake.fail_next = 2
    token = await session.access_token()
    assert token.access_token in fake.access_tokens and fake.calls["/v1/oauth/token"] == 4
    fake.fail_next = 3
    session.expire()
    with pytest.raises(UpstreamConnectError, match="could not renew the anthropic login"):
        await session.access_token()
    assert session.reason() is None  # still logged in: the next request tries again
    await session.aclose()


async def test_revoked_refresh_token_means_login_required(
    fake: FakeOAuth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryStore()
    session = await logged_in_claude(fake, store, retry_delays=(0.01,))
    fake.revoke()
    with pytest.raises(LoginRequired) as refused:
        await session.access_token()
    assert refused.value.status == 503
    assert "run `thanos auth login anthropic`" in refused.value.message
    assert store.load("anthropic") is None
    assert session.describe()["logged_in"] is False
    with pytest.raises(LoginRequired):  # stays so, without asking the server again
        await session.access_token()
    assert fake.calls["/v1/oauth/token"] == 2
    await session.aclose()
    for secret in fake.secrets():
        assert secret not in caplog.text and secret not in str(session.describe())


async def test_a_login_made_elsewhere_is_picked_up(fake: FakeOAuth) -> None:
    store = MemoryStore()
    session = Session("anthropic", store, ClaudeAuth(fake.claude_settings()), recheck=0.0)
    assert session.reason() == "login required (not logged in): run `thanos auth login anthropic`"
    store.save("anthropic", TOKEN)  # `thanos auth login anthropic` in another process
    assert session.reason() is None
    assert await session.access_token() == TOKEN
    await session.aclose()


# -- the CLI, end to end ------------------------------------------------------------------


async def thanos(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # a headless machine
        **(env or {}),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thanos_asgi", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def output(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_copilot_login_status_logout(fake: FakeOAuth, tmp_path: Path) -> None:
    fake.poll_script = ["authorization_pending", "authorization_pending"]
    login = await thanos(
        tmp_path, "auth", "login", "copilot", "--github-url", fake.base,
        "--github-api-url", fake.base,
    )  # fmt: skip
    code, out, err = await output(login)
    assert code == 0, err
    assert f"Open {fake.base}/login/device and enter the code ABCD-1234" in out
    stored = tmp_path / "thanos" / "logins" / "copilot.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    code, out, _ = await output(await thanos(tmp_path, "auth", "status"))
    (github,) = fake.github_tokens
    assert f"copilot\tlogged in as {mask(github)}" in out and "anthropic\tnot logged in" in out
    for secret in fake.secrets():
        assert secret not in out
    code, out, _ = await output(await thanos(tmp_path, "auth", "logout", "copilot"))
    assert code == 0 and not stored.exists()
    _, out, _ = await output(await thanos(tmp_path, "auth", "status"))
    assert "copilot\tnot logged in" in out


async def test_cli_anthropic_login_reads_the_pasted_code(fake: FakeOAuth, tmp_path: Path) -> None:
    login = await thanos(
        tmp_path, "auth", "login", "anthropic",
        "--authorize-url", f"{fake.base}/oauth/authorize",
        "--token-url", f"{fake.base}/v1/oauth/token",
    )  # fmt: skip
    assert login.stdout is not None and login.stdin is not None
    url = ""
    while not url.startswith("http"):
        url = (await asyncio.wait_for(login.stdout.readline(), 30)).decode().strip()
    async with httpx.AsyncClient() as browser:
        pasted = (await browser.get(url)).text
    login.stdin.write(pasted.encode() + b"\n")
    code, out, err = await output(login)
    assert code == 0, err
    assert "logged in to anthropic as sk****" in out and "file store" in out
    stored = FileStore(tmp_path / "thanos" / "logins").load("anthropic")
    assert stored is not None and stored.access_token in fake.access_tokens


async def test_cli_login_failure_is_a_clear_error(fake: FakeOAuth, tmp_path: Path) -> None:
    fake.poll_script = ["access_denied"]
    login = await thanos(
        tmp_path, "auth", "login", "copilot", "--github-url", fake.base,
        "--github-api-url", fake.base,
    )  # fmt: skip
    code, _, err = await output(login)
    assert code == 1 and "thanos: the login was denied on GitHub" in err


# -- sessions from config ---------------------------------------------------------------------


def test_sessions_follow_the_config(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from thanos_asgi.providers._login import claude_session, copilot_session, uses_claude_login

    def config(**keys: object) -> Any:
        base = {"name": "x", "base_url": None, "auth_method": None}
        return SimpleNamespace(**{**base, **keys})

    assert uses_claude_login(config(name="anthropic_max"))
    assert uses_claude_login(config(name="claude", auth_method="oauth"))
    assert not uses_claude_login(config(name="anthropic_max", auth_method="api_key"))
    assert not uses_claude_login(config(name="anthropic"))
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        copilot = copilot_session(
            config(base_url="https://copilot-api.ghe.test", token_dir=str(tmp_path))
        )
        assert isinstance(copilot.store, FileStore) and copilot.store.directory == tmp_path
        assert isinstance(copilot.refresher, CopilotAuth)
        assert copilot.refresher.settings.api_url == "https://api.ghe.test"
        claude = claude_session(config(oauth_token_url="http://t.test/token", oauth_client_id="c"))
        assert isinstance(claude.store, MemoryStore) and isinstance(claude.refresher, ClaudeAuth)
        assert claude.refresher.settings.token_url == "http://t.test/token"
        assert claude.refresher.settings.client_id == "c"
    finally:
        keyring.set_keyring(previous)


# -- logins from the config the gateway reads -----------------------------------------------


@pytest.fixture
def no_keyring() -> Iterator[None]:
    """This process, like the CLI's, keeps logins in files (a headless machine)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def gateway_from(config: Path, home: Path) -> Gateway:
    """The gateway `thanos serve --config <config>` would build for a user at `home`."""
    env = {"HOME": str(home)}
    return Gateway(with_local_files(load_config(config, env=env), env))


def hello(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content="hi")])


async def test_cli_copilot_login_uses_the_configured_github_and_token_dir(
    fake: FakeOAuth, tmp_path: Path, no_keyring: None
) -> None:
    tokens = tmp_path / "tokens"
    config = tmp_path / "thanos.toml"
    config.write_text(
        f'[providers.copilot]\nmodel = "gpt-4o"\ngithub_url = "{fake.base}"\n'
        f'github_api_url = "{fake.base}"\noauth_client_id = "Iv1.config-client"\n'
        f'token_dir = "{tokens}"\n'
    )
    code, out, err = await output(
        await thanos(tmp_path, "auth", "login", "copilot", "--config", str(config))
    )
    assert code == 0, err
    assert f"Open {fake.base}/login/device and enter the code ABCD-1234" in out
    assert fake.bodies["/login/device/code"][0]["client_id"] == "Iv1.config-client"
    assert fake.calls["/copilot_internal/v2/token"] == 1  # at the configured API URL
    assert (tokens / "copilot.json").exists()
    assert not (tmp_path / "thanos" / "logins").exists()  # not the default folder
    async with gateway_from(config, tmp_path / "home") as gw:  # the gateway finds the login
        answer = await gw.chat(hello("copilot/gpt-4o"))
    assert answer.choices[0].message.content == "copilot says hi"


async def test_cli_logs_in_an_instance_named_otherwise_from_thanos_config(
    fake: FakeOAuth, tmp_path: Path, no_keyring: None
) -> None:
    tokens = tmp_path / "claude-tokens"
    config = tmp_path / "elsewhere.toml"
    config.write_text(
        f'[providers.claude_work]\nkind = "anthropic"\nauth_method = "oauth"\n'
        f'model = "claude-sonnet-4-5"\nbase_url = "{fake.base}"\n'
        f'oauth_authorize_url = "{fake.base}/oauth/authorize"\n'
        f'oauth_token_url = "{fake.base}/v1/oauth/token"\n'
        f'oauth_client_id = "config-claude-client"\ntoken_dir = "{tokens}"\n'
    )
    async with gateway_from(config, tmp_path / "home") as gw:  # not logged in: says how
        with pytest.raises(LoginRequired, match="run `thanos auth login claude_work`"):
            await gw.chat(hello("claude_work/claude-sonnet-4-5"))
    env = {"THANOS_CONFIG": str(config)}
    login = await thanos(tmp_path, "auth", "login", "claude_work", env=env)
    assert login.stdout is not None and login.stdin is not None
    url = ""
    while not url.startswith("http"):
        line = await asyncio.wait_for(login.stdout.readline(), 30)
        assert line, (await output(login))[2]  # it ended without showing a URL
        url = line.decode().strip()
    assert url.startswith(f"{fake.base}/oauth/authorize?") and "config-claude-client" in url
    async with httpx.AsyncClient() as browser:
        pasted = (await browser.get(url)).text
    login.stdin.write(pasted.encode() + b"\n")
    code, out, err = await output(login)
    assert code == 0, err
    assert "logged in to claude_work as sk****" in out
    assert fake.bodies["/v1/oauth/token"][0]["client_id"] == "config-claude-client"
    assert FileStore(tokens).load("anthropic") is not None
    _, out, _ = await output(await thanos(tmp_path, "auth", "status", env=env))
    assert "claude_work\tlogged in as sk****" in out
    async with gateway_from(config, tmp_path / "home") as gw:
        answer = await gw.chat(hello("claude_work/claude-sonnet-4-5"))
    assert answer.choices[0].message.content == "claude says hi"


async def test_cli_refuses_an_instance_without_a_login(tmp_path: Path) -> None:
    config = tmp_path / "thanos.toml"
    config.write_text('[providers.openai]\napi_key = "sk-test-0123456789abcdef"\n')
    code, _, err = await output(
        await thanos(tmp_path, "auth", "login", "openai", "--config", str(config))
    )
    assert code == 1
    assert "nothing logs in as 'openai'" in err and "sk-test" not in err
