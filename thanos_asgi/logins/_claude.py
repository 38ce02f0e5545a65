"""Anthropic Claude Pro/Max: an OAuth authorization-code login with PKCE (S256).

1. `authorize()`: a verifier, its S256 challenge and a random state (authlib); the URL the
   user opens: {authorize_url}?code=true&client_id&response_type=code&redirect_uri&scope
   &code_challenge&code_challenge_method=S256&state.
2. The user approves, and the callback page shows `code#state`; they paste it back
   (`split_paste` also takes the whole redirect URL, or `code=...&state=...`). The state
   must be the one we sent.
3. `exchange()`: POST {token_url} JSON {grant_type: authorization_code, client_id, code,
   state, redirect_uri, code_verifier} -> {access_token, refresh_token, expires_in}.
4. `refresh()`: POST {token_url} JSON {grant_type: refresh_token, refresh_token, client_id};
   the answer carries a new (rotated) refresh token, which replaces the old one. A 4xx
   (`invalid_grant`: revoked or already used) means only a new login helps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from thanos_asgi.logins._session import LoginFailed, Revoked
from thanos_asgi.logins._store import Token, mask
from thanos_asgi.logins._wire import Transient, Wire, number, oauth_error, text

if TYPE_CHECKING:
    import httpx

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"  # the Claude Code client
PENDING_SECONDS = 600.0  # how long an authorize URL may wait for its code


@dataclass(frozen=True)
class ClaudeSettings:
    client_id: str = CLIENT_ID
    authorize_url: str = "https://claude.ai/oauth/authorize"
    token_url: str = "https://platform.claude.com/v1/oauth/token"
    redirect_uri: str = "https://console.anthropic.com/oauth/code/callback"
    scope: str = "org:create_api_key user:profile user:inference"


@dataclass(frozen=True)
class Authorization:
    """One started login: the URL to open, and what finishing it needs."""

    url: str
    state: str
    verifier: str = field(repr=False)
    expires_at: float = 0.0


def split_paste(pasted: str) -> tuple[str, str]:
    """(code, state) from `code#state`, a redirect URL, or `code=...&state=...`."""
    pasted = pasted.strip()
    if "code=" in pasted:
        query = urlsplit(pasted).query if "://" in pasted else pasted
        fields = parse_qs(query.split("#", 1)[0])
        return (fields.get("code") or [""])[0], (fields.get("state") or [""])[0]
    code, _, state = pasted.partition("#")
    return code.strip(), state.strip()


class ClaudeAuth:
    """The OAuth side of a Claude Pro/Max login; also the session's refresher."""

    def __init__(
        self,
        settings: ClaudeSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or ClaudeSettings()
        self.wire = Wire(client)
        self.clock = clock

    def authorize(self) -> Authorization:
        from authlib.common.security import generate_token  # type: ignore[import-untyped]
        from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
            prepare_grant_uri,
        )
        from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

        s = self.settings
        verifier, state = generate_token(64), generate_token(32)
        url = prepare_grant_uri(
            s.authorize_url,
            client_id=s.client_id,
            response_type="code",
            redirect_uri=s.redirect_uri,
            scope=s.scope,
            state=state,
            code="true",
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return Authorization(str(url), state, verifier, self.clock() + PENDING_SECONDS)

    async def exchange(self, authorization: Authorization, pasted: str) -> Token:
        """Finish the login with what the user pasted back."""
        code, state = split_paste(pasted)
        if not code:
            raise LoginFailed("paste the whole `code#state` shown after approving", code="no_code")
        if state != authorization.state:
            raise LoginFailed("the pasted code belongs to another login attempt", code="bad_state")
        body = {
            "grant_type": "authorization_code",
            "client_id": self.settings.client_id,
            "code": code,
            "state": state,
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": authorization.verifier,
        }
        try:
            status, data = await self.wire.call("POST", self.settings.token_url, json=body)
        except Transient as exc:
            raise LoginFailed(f"could not finish the login: {exc.reason}") from None
        if status != 200 or not text(data, "access_token"):
            raise LoginFailed(f"Anthropic refused the code: {oauth_error(data, status)}")
        return self._token(data, "")

    async def refresh(self, token: Token) -> Token:
        body = {
            "grant_type": "refresh_token",
            "refresh_token": token.refresh_token,
            "client_id": self.settings.client_id,
        }
        status, data = await self.wire.call("POST", self.settings.token_url, json=body)
        if status != 200 or not text(data, "access_token"):
            raise Revoked(f"Anthropic refused to renew the login ({oauth_error(data, status)})")
        return self._token(data, token.refresh_token)

    def _token(self, data: dict[str, Any], previous_refresh: str) -> Token:
        refresh = text(data, "refresh_token") or previous_refresh  # rotated when sent
        expires_in = number(data, "expires_in")
        return Token(
            access_token=text(data, "access_token"),
            refresh_token=refresh,
            expires_at=None if expires_in is None else self.clock() + expires_in,
            identity=mask(refresh or text(data, "access_token")),
        )

    async def aclose(self) -> None:
        await self.wire.aclose()
