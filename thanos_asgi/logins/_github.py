"""GitHub Copilot: the device flow, and trading the GitHub token for a Copilot API token.

1. `device_code()`: POST {github}/login/device/code -> user code + verification URL to show.
2. `poll(code)`: POST {github}/login/oauth/access_token every `interval` seconds;
   `authorization_pending` waits, `slow_down` waits longer (the server's new interval, else
   +5 s), `expired_token` / `access_denied` / any other error end the login (LoginFailed).
3. `refresh(token)`: GET {api}/copilot_internal/v2/token with `authorization: token <github>`
   -> `{token, expires_at, refresh_in, endpoints?}`. The GitHub token is the long-lived
   credential (stored as the refresh token); it is never refreshed itself. 401 there means
   it was revoked. The Copilot API base comes from `endpoints.api`, else the token's
   `proxy-ep=proxy.X` (-> https://api.X).

GitHub Enterprise: `CopilotSettings.enterprise("ghe.example.com")` uses https://ghe.example.com,
https://api.ghe.example.com and https://copilot-api.ghe.example.com.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from thanos_asgi.logins._session import LoginFailed, Revoked
from thanos_asgi.logins._store import Token, mask
from thanos_asgi.logins._wire import Transient, Wire, number, oauth_error, text

if TYPE_CHECKING:
    import httpx

CLIENT_ID = "Iv1.b507a08c87ecfe98"  # the VS Code Copilot OAuth app
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5.0
EXPIRED = "the login code expired before it was approved; start the login again"


@dataclass(frozen=True)
class CopilotSettings:
    github_url: str = "https://github.com"  # device flow (GHE: https://<domain>)
    api_url: str = "https://api.github.com"  # token exchange (GHE: https://api.<domain>)
    copilot_url: str | None = None  # chat API; None: from the token, else api.githubcopilot.com
    client_id: str = CLIENT_ID
    scope: str = "read:user"
    editor_version: str = "vscode/1.107.0"
    plugin_version: str = "copilot-chat/0.35.0"
    user_agent: str = "GitHubCopilotChat/0.35.0"
    api_version: str = "2025-04-01"

    @classmethod
    def enterprise(cls, domain: str, **overrides: Any) -> CopilotSettings:
        return cls(
            github_url=f"https://{domain}",
            api_url=f"https://api.{domain}",
            copilot_url=f"https://copilot-api.{domain}",
            **overrides,
        )

    @classmethod
    def for_base_url(cls, base_url: str | None, **overrides: Any) -> CopilotSettings:
        """A configured `base_url` of https://copilot-api.<domain> means GitHub Enterprise."""
        host = urlsplit(base_url or "").hostname or ""
        if host.startswith("copilot-api.") and not host.endswith("githubcopilot.com"):
            settings = cls.enterprise(host.removeprefix("copilot-api."), **overrides)
        else:
            settings = cls(**overrides)
        return replace(settings, copilot_url=base_url) if base_url else settings

    def editor_headers(self) -> dict[str, str]:
        return {
            "editor-version": self.editor_version,
            "editor-plugin-version": self.plugin_version,
            "user-agent": self.user_agent,
            "x-github-api-version": self.api_version,
            "x-vscode-user-agent-library-version": "electron-fetch",
        }


@dataclass(frozen=True)
class DeviceCode:
    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: float
    interval: float


class CopilotAuth:
    """The GitHub side of a Copilot login; also the session's refresher."""

    def __init__(
        self,
        settings: CopilotSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings or CopilotSettings()
        self.wire = Wire(client)
        self.clock = clock
        self.sleep = sleep

    async def device_code(self) -> DeviceCode:
        s = self.settings
        url = s.github_url.rstrip("/") + "/login/device/code"
        try:
            status, data = await self.wire.call(
                "POST", url, form={"client_id": s.client_id, "scope": s.scope}
            )
        except Transient as exc:
            raise LoginFailed(f"GitHub did not start the login: {exc.reason}") from None
        if status != 200 or not text(data, "device_code") or not text(data, "user_code"):
            raise LoginFailed(f"GitHub did not start the login: {oauth_error(data, status)}")
        return DeviceCode(
            device_code=text(data, "device_code"),
            user_code=text(data, "user_code"),
            verification_uri=text(data, "verification_uri") or s.github_url + "/login/device",
            expires_in=number(data, "expires_in") or 900.0,
            interval=number(data, "interval") or 5.0,
        )

    async def poll(self, code: DeviceCode) -> str:
        """Wait for the user to approve; the GitHub OAuth token."""
        url = self.settings.github_url.rstrip("/") + "/login/oauth/access_token"
        form = {
            "client_id": self.settings.client_id,
            "device_code": code.device_code,
            "grant_type": DEVICE_GRANT,
        }
        interval, deadline = code.interval, time.monotonic() + code.expires_in
        while time.monotonic() < deadline:
            await self.sleep(interval)
            try:
                status, data = await self.wire.call("POST", url, form=form)
            except Transient:
                continue  # the user is still typing the code: try again next round
            if text(data, "access_token"):
                return text(data, "access_token")
            interval = _next_interval(data, status, interval)
        raise LoginFailed(EXPIRED, code="expired_token")

    async def login(self, code: DeviceCode) -> Token:
        """Poll until approved, then get the first Copilot token (checks the subscription)."""
        github_token = await self.poll(code)
        try:
            return await self.refresh(Token(refresh_token=github_token))
        except Revoked as exc:
            raise LoginFailed(f"GitHub refused the new login: {exc.reason}") from None
        except Transient as exc:
            raise LoginFailed(f"could not get a Copilot token: {exc.reason}") from None

    async def refresh(self, token: Token) -> Token:
        github_token = token.refresh_token
        headers = {"authorization": f"token {github_token}", **self.settings.editor_headers()}
        url = self.settings.api_url.rstrip("/") + "/copilot_internal/v2/token"
        status, data = await self.wire.call("GET", url, headers=headers)
        if status == 401:
            raise Revoked(f"GitHub answered 401 ({oauth_error(data, status)})")
        if status != 200 or not text(data, "token"):
            raise Revoked(f"no Copilot access for this account ({oauth_error(data, status)})")
        return self._token(data, github_token)

    def _token(self, data: dict[str, Any], github_token: str) -> Token:
        expires_at = number(data, "expires_at")
        if expires_at is None:
            expires_at = self.clock() + (number(data, "refresh_in") or 1500.0) + 60
        copilot = text(data, "token")
        api = _api_url(data, copilot)  # where this account's chat API lives
        return Token(
            access_token=copilot,
            refresh_token=github_token,
            expires_at=expires_at,
            identity=mask(github_token),
            extra={"api": api} if api else {},
        )

    async def aclose(self) -> None:
        await self.wire.aclose()


def _next_interval(data: dict[str, Any], status: int, interval: float) -> float:
    error = text(data, "error")
    if error == "authorization_pending":
        return interval
    if error == "slow_down":  # RFC 8628: the new interval, or 5 s more, from now on
        given = number(data, "interval")
        return given if given and given > interval else interval + SLOW_DOWN_STEP
    if error == "expired_token":
        raise LoginFailed(EXPIRED, code="expired_token")
    if error == "access_denied":
        raise LoginFailed("the login was denied on GitHub", code="access_denied")
    raise LoginFailed(f"GitHub refused the login: {oauth_error(data, status)}")


def _api_url(data: dict[str, Any], copilot_token: str) -> str | None:
    endpoints = data.get("endpoints")
    if isinstance(endpoints, dict) and isinstance(endpoints.get("api"), str):
        return str(endpoints["api"]).rstrip("/")
    for part in copilot_token.split(";"):
        key, _, value = part.partition("=")
        if key == "proxy-ep" and value:
            return "https://" + value.replace("proxy.", "api.", 1)
    return None
