"""Providers whose credential is a login: the plumbing they share, and Claude's OAuth calls.

`LoginProvider` is an HTTPProvider with an optional `session`: without one it is the plain
API-key provider; with one, every request first gets a fresh access token (refreshed once for
all concurrent requests), and a missing or revoked login answers 503 "login required" with the
command to run. `ClaudeOAuth` adds what Anthropic's API wants from OAuth (Claude Pro/Max)
callers: `Authorization: Bearer` instead of `x-api-key`, the `oauth-2025-04-20` beta, the
Claude Code user agent, `?beta=true` on /v1/messages, and the Claude Code identity as the
first system block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.exceptions import UpstreamError, UpstreamStatusError
from thanos_asgi.logins import ANTHROPIC, COPILOT
from thanos_asgi.logins._claude import ClaudeAuth, ClaudeSettings
from thanos_asgi.logins._github import CopilotAuth, CopilotSettings
from thanos_asgi.logins._session import LoginRequired, Session
from thanos_asgi.logins._setup import LoginSetup
from thanos_asgi.logins._store import Token, default_store
from thanos_asgi.providers.base import HTTPProvider
from thanos_asgi.sanitize import decode as bounded_decode
from thanos_asgi.upstream import Timeouts, Transport, UpstreamResponse

if TYPE_CHECKING:
    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import ProviderSpec

CLAUDE_CODE = "You are Claude Code, Anthropic's official CLI for Claude."
CLAUDE_BETAS = ("claude-code-20250219", "oauth-2025-04-20")
CLAUDE_AGENT = "claude-cli/2.1.75 (external, cli)"


def _setting(config: ProviderConfig, key: str) -> Any:
    """An optional config key (see the module docs of `thanos_asgi.logins`); None if unset."""
    return getattr(config, key, None)


def _overrides(config: ProviderConfig, **keys: str) -> dict[str, Any]:
    return {field: value for field, key in keys.items() if (value := _setting(config, key))}


def _store_for(config: ProviderConfig) -> Any:
    directory = _setting(config, "token_dir")
    return lambda: default_store(directory)


def copilot_settings(config: ProviderConfig) -> CopilotSettings:
    overrides = _overrides(
        config, github_url="github_url", api_url="github_api_url", client_id="oauth_client_id"
    )
    return CopilotSettings.for_base_url(config.base_url, **overrides)


def copilot_session(config: ProviderConfig) -> Session:
    auth = CopilotAuth(copilot_settings(config))
    return Session(COPILOT, _store_for(config), auth, instance=config.name or None)


def uses_claude_login(config: ProviderConfig) -> bool:
    """`auth_method = "oauth"`, or an instance named anthropic_max that does not say api_key."""
    method = config.auth_method
    return method == "oauth" or (config.name == "anthropic_max" and method != "api_key")


def claude_settings(config: ProviderConfig) -> ClaudeSettings:
    overrides = _overrides(
        config,
        client_id="oauth_client_id",
        authorize_url="oauth_authorize_url",
        token_url="oauth_token_url",
        redirect_uri="oauth_redirect_uri",
    )
    return ClaudeSettings(**overrides)


def claude_session(config: ProviderConfig) -> Session:
    auth = ClaudeAuth(claude_settings(config))
    return Session(ANTHROPIC, _store_for(config), auth, instance=config.name or None)


def login_setup(config: ProviderConfig) -> LoginSetup | None:
    """How `thanos auth login <instance>` logs in for this instance, as its provider will look
    for the login (same OAuth URLs, client id and token folder); None if it uses no login."""
    directory = _setting(config, "token_dir")
    if config.kind == "copilot":
        return LoginSetup(config.name, COPILOT, copilot_settings(config), directory)
    if config.kind == "anthropic" and uses_claude_login(config):
        return LoginSetup(config.name, ANTHROPIC, claude_settings(config), directory)
    return None


def login_setups(configs: Iterable[ProviderConfig], token_dir: str | None) -> dict[str, LoginSetup]:
    """What `thanos auth` can log in to, by name: every configured instance that uses a login,
    and the login names themselves (copilot, anthropic, anthropic_max) where no instance has
    them: the one instance using that login, or, with none, its defaults in `token_dir`."""
    setups = {c.name: setup for c in configs if (setup := login_setup(c)) is not None}
    defaults: dict[str, CopilotSettings | ClaudeSettings] = {
        COPILOT: CopilotSettings(),
        ANTHROPIC: ClaudeSettings(),
    }
    for login, names in ((COPILOT, (COPILOT,)), (ANTHROPIC, (ANTHROPIC, "anthropic_max"))):
        users = [setup for setup in setups.values() if setup.login == login]
        if len(users) > 1:
            continue  # ambiguous: the instance must be named
        chosen = users[0] if users else LoginSetup(login, login, defaults[login], token_dir)
        for name in names:
            setups.setdefault(name, chosen)
    return setups


class LoginProvider(HTTPProvider):
    def __init__(
        self,
        config: ProviderConfig,
        *,
        spec: ProviderSpec,
        transport: Transport,
        session: Session | None = None,
    ) -> None:
        super().__init__(config, spec=spec, transport=transport)
        self.session = session or self.make_session(config)

    def make_session(self, config: ProviderConfig) -> Session | None:
        return None

    def login_headers(self, token: Token) -> Mapping[str, str]:
        return {**self.headers, "authorization": f"Bearer {token.access_token}"}

    def adopt(self, token: Token) -> None:
        """Hook: a (possibly new) token is about to be used."""

    def missing_key(self) -> str | None:
        if self.session is None:
            return super().missing_key()
        why = self.session.reason()
        return None if why is None else f"provider '{self.name}' is not available: {why}"

    async def send(
        self, method: str, path: str, body: bytes | None = None, *, timeouts: Timeouts | None = None
    ) -> UpstreamResponse:
        if self.session is not None:
            try:
                self.adopt(await self.session.access_token())
            except LoginRequired as exc:  # 503, naming this instance and the command to run
                raise LoginRequired(f"provider '{self.name}' is not available: {exc}") from None
            except UpstreamError as exc:  # the renewal failed even after retries
                raise self.tag(exc) from None
        return await super().send(method, path, body, timeouts=timeouts)

    async def request_headers(self) -> Mapping[str, str]:
        if self.session is None:
            return await super().request_headers()
        return self.login_headers(await self.session.access_token())

    def error_from(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamStatusError:
        """As usual, but a refused login token is renewed before the next request (401), and
        the messages speak of the login rather than an API key."""
        error = super().error_from(status, body, headers)
        if self.session is None or status not in (401, 403):
            return error
        if status == 401:
            self.session.expire()
            error.message = (
                f"provider '{self.name}' rejected its login token (upstream 401); it is renewed "
                f"on the next request; if this goes on, run `{self.session.command}`"
            )
        else:
            error.message = (
                f"provider '{self.name}' refused this request for the logged-in account "
                "(upstream 403); check that the account may use this model"
            )
        error.args = (error.message,)
        return error

    def scrub(self, text: str) -> str:
        text = super().scrub(text)
        return text if self.session is None else self.session.scrub(text)

    def status(self) -> dict[str, Any]:
        state = super().status()
        if self.session is not None:
            state["login"] = self.session.describe()
        return state

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.aclose()
        await super().aclose()


_encode = msgspec.json.Encoder().encode


def with_claude_code_system(body: bytes) -> bytes:
    """The Messages request with the Claude Code identity as its first system block."""
    try:
        data = bounded_decode(body)
    except msgspec.DecodeError:
        return body  # not ours to fix: the API will say what is wrong
    if not isinstance(data, dict):
        return body
    system = data.get("system")
    blocks: list[Any] = (
        system if isinstance(system, list) else [{"type": "text", "text": system}] if system else []
    )
    first = blocks[0] if blocks else None
    if not (isinstance(first, dict) and first.get("text") == CLAUDE_CODE):
        data["system"] = [{"type": "text", "text": CLAUDE_CODE}, *blocks]
    return _encode(data)


class ClaudeOAuth(LoginProvider):
    """Anthropic with an OAuth login when `uses_claude_login(config)`; else API keys as usual."""

    def make_session(self, config: ProviderConfig) -> Session | None:
        return claude_session(config) if uses_claude_login(config) else None

    @cached_property
    def oauth_headers(self) -> dict[str, str]:
        """The fixed headers minus `x-api-key`, with the OAuth betas and Claude Code's agent."""
        headers: dict[str, str] = {}
        betas = dict.fromkeys(CLAUDE_BETAS)
        for key, value in self.headers.items():
            if key.lower() == "anthropic-beta":
                betas.update(dict.fromkeys(b.strip() for b in value.split(",") if b.strip()))
            elif key.lower() != "x-api-key":
                headers[key] = value
        headers.update({"anthropic-beta": ",".join(betas), "user-agent": CLAUDE_AGENT})
        headers["x-app"] = "cli"
        return headers

    def login_headers(self, token: Token) -> Mapping[str, str]:
        return {**self.oauth_headers, "authorization": f"Bearer {token.access_token}"}

    async def send(
        self, method: str, path: str, body: bytes | None = None, *, timeouts: Timeouts | None = None
    ) -> UpstreamResponse:
        if self.session is not None and method == "POST" and body and path.endswith("/messages"):
            body, path = with_claude_code_system(body), path + "?beta=true"
        return await super().send(method, path, body, timeouts=timeouts)


__all__ = [
    "ANTHROPIC",
    "COPILOT",
    "ClaudeOAuth",
    "LoginProvider",
    "claude_session",
    "claude_settings",
    "copilot_session",
    "copilot_settings",
    "login_setup",
    "login_setups",
    "uses_claude_login",
    "with_claude_code_system",
]
