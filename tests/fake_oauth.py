"""Fake GitHub (device flow, Copilot token exchange, Copilot chat API) and fake Anthropic
(OAuth authorize + token endpoints, Messages API), as one ASGI app served over loopback.

Facts follow PROVIDERS.md §7 and §8. Tests script the device flow (`poll_script`), make the
token endpoints fail (`fail_next`), slow (`delay`) or refuse (`revoke`), and read what the
clients sent (`calls`, `headers`, `bodies`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.servers import running
from tests.upstreams import completion
from thanos_asgi import Gateway, HttpxTransport
from thanos_asgi.config import parse_config
from thanos_asgi.logins import (
    ClaudeAuth,
    ClaudeSettings,
    CopilotAuth,
    CopilotSettings,
    FileStore,
    Session,
)

ANTHROPIC_API_KEY = "sk-ant-api03-APIKEY-0123456789"


class FakeOAuth:
    def __init__(self) -> None:
        self.base = ""  # set by the test once the server runs (the Copilot `endpoints.api`)
        self.interval = 0.05
        self.slow_down_interval = 0.2
        self.poll_script: list[str] = []  # per poll: authorization_pending, slow_down, ...
        self.poll_times: list[float] = []
        self.copilot_ttl = 1800.0
        self.anthropic_ttl = 3600.0
        self.delay = 0.0  # seconds the token endpoints take
        self.fail_next = 0  # token endpoint calls answered 503 first
        self.calls: Counter[str] = Counter()
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.bodies: dict[str, list[Any]] = {}
        self.queries: dict[str, list[str]] = {}
        self.github_tokens: set[str] = set()
        self.copilot_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.access_tokens: set[str] = set()
        self.codes: dict[str, dict[str, str]] = {}  # code -> authorize params
        self.issued: set[str] = set()  # every token ever handed out
        self.app = Starlette(
            routes=[
                Route("/login/device/code", self.device_code, methods=["POST"]),
                Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/copilot_internal/v2/token", self.copilot_token, methods=["GET"]),
                Route("/chat/completions", self.chat, methods=["POST"]),
                Route("/models", self.models, methods=["GET"]),
                Route("/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/v1/oauth/token", self.oauth_token, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
            ]
        )

    # -- bookkeeping ---------------------------------------------------------------------

    async def _seen(self, request: Request) -> Any:
        name = request.url.path
        self.calls[name] += 1
        self.headers.setdefault(name, []).append(dict(request.headers))
        self.queries.setdefault(name, []).append(request.url.query)
        raw = await request.body()
        if not raw:
            body: Any = {}
        elif request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(raw)
        else:  # GitHub takes either; clients differ (PROVIDERS.md §7.1)
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        self.bodies.setdefault(name, []).append(body)
        return body

    async def _trouble(self) -> Response | None:
        await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"message": "try later"}, status_code=503)
        return None

    def revoke(self) -> None:
        self.github_tokens.clear()
        self.refresh_tokens.clear()

    # -- GitHub --------------------------------------------------------------------------

    async def device_code(self, request: Request) -> Response:
        body = await self._seen(request)
        assert body["client_id"] and body["scope"] == "read:user"
        return JSONResponse(
            {
                "device_code": "dev-" + secrets.token_hex(8),
                "user_code": "ABCD-1234",
                "verification_uri": f"{self.base}/login/device",
                "expires_in": 5,
                "interval": self.interval,
            }
        )

    async def access_token(self, request: Request) -> Response:
        body = await self._seen(request)
        assert body["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"
        self.poll_times.append(time.monotonic())
        step = self.poll_script.pop(0) if self.poll_script else "ok"
        if step == "slow_down":
            return JSONResponse({"error": "slow_down", "interval": self.slow_down_interval})
        if step != "ok":
            return JSONResponse({"error": step, "error_description": f"fake: {step}"})
        token = "gho_" + secrets.token_hex(16)
        self.github_tokens.add(token)
        self.issued.add(token)
        return JSONResponse({"access_token": token, "token_type": "bearer", "scope": "read:user"})

    async def copilot_token(self, request: Request) -> Response:
        await self._seen(request)
        if (trouble := await self._trouble()) is not None:
            return trouble
        scheme, _, github = request.headers.get("authorization", "").partition(" ")
        if scheme != "token" or github not in self.github_tokens:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        host = self.base.removeprefix("http://")
        token = f"tid=1;exp=1;sku=free;proxy-ep=proxy.{host};8kp=1:{secrets.token_hex(12)}"
        self.copilot_tokens.add(token)
        self.issued.add(token)
        return JSONResponse(
            {
                "token": token,
                "expires_at": int(time.time() + self.copilot_ttl),
                "refresh_in": int(self.copilot_ttl - 300),
                "endpoints": {"api": self.base},
            }
        )

    async def chat(self, request: Request) -> Response:
        body = await self._seen(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.copilot_tokens:
            return JSONResponse({"error": {"message": "unauthorized"}}, status_code=401)
        return JSONResponse(completion(body["model"], "copilot says hi"))

    async def models(self, request: Request) -> Response:
        await self._seen(request)
        return JSONResponse({"data": [{"id": "gpt-4o"}, {"id": "claude-sonnet-4"}]})

    # -- Anthropic -----------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        """What the user's browser does: approve, and see `code#state` to paste back."""
        params = dict(request.query_params)
        assert params["response_type"] == "code" and params["code_challenge_method"] == "S256"
        code = "code-" + secrets.token_hex(8)
        self.codes[code] = params
        return PlainTextResponse(f"{code}#{params['state']}")

    async def oauth_token(self, request: Request) -> Response:
        body = await self._seen(request)
        if (trouble := await self._trouble()) is not None:
            return trouble
        if body.get("grant_type") == "authorization_code":
            return self._code_grant(body)
        if body.get("refresh_token") not in self.refresh_tokens:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        self.refresh_tokens.discard(body["refresh_token"])  # rotated: the old one is spent
        return self._tokens()

    def _code_grant(self, body: dict[str, Any]) -> Response:
        params = self.codes.pop(body.get("code", ""), None)
        if params is None or body["state"] != params["state"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        digest = hashlib.sha256(body["code_verifier"].encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if challenge != params["code_challenge"] or body["client_id"] != params["client_id"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return self._tokens()

    def _tokens(self) -> Response:
        access = "sk-ant-oat01-" + secrets.token_hex(16)
        refresh = "sk-ant-ort01-" + secrets.token_hex(16)
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        self.issued |= {access, refresh}
        answer = {"access_token": access, "refresh_token": refresh}
        return JSONResponse({**answer, "expires_in": self.anthropic_ttl, "token_type": "bearer"})

    async def messages(self, request: Request) -> Response:
        body = await self._seen(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.access_tokens:
            error = {"type": "authentication_error", "message": "invalid token"}
            return JSONResponse({"type": "error", "error": error}, status_code=401)
        return JSONResponse(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": "claude says hi"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 4},
            }
        )

    # -- for the tests -------------------------------------------------------------------

    def copilot_settings(self) -> CopilotSettings:
        return CopilotSettings(github_url=self.base, api_url=self.base)

    def claude_settings(self) -> ClaudeSettings:
        return ClaudeSettings(
            authorize_url=f"{self.base}/oauth/authorize", token_url=f"{self.base}/v1/oauth/token"
        )

    def secrets(self) -> set[str]:
        """Every token this server handed out (none may show up where it must not)."""
        return set(self.issued)


@asynccontextmanager
async def serving() -> AsyncIterator[FakeOAuth]:
    fake = FakeOAuth()
    async with running(fake.app) as base:
        fake.base = base
        yield fake


def login_gateway(
    fake: FakeOAuth,
    store: FileStore,
    extra: str = "",
    *,
    copilot: CopilotSettings | None = None,
    retry_delays: Sequence[float] = (0.5, 2.0),  # Session's own
) -> Gateway:
    """A gateway whose `copilot` and `anthropic_max` log in to `fake` (GitHub at `copilot`
    if given; tokens kept in `store`; the Claude login retries after `retry_delays`), an
    Anthropic API-key instance `anthropic` beside them, and `extra` after `[routing]`."""
    text = f"""
[providers.copilot]
model = "gpt-4o"

[providers.anthropic_max]
model = "claude-sonnet-4-5"
base_url = "{fake.base}"

[providers.anthropic]
api_key = "{ANTHROPIC_API_KEY}"
base_url = "{fake.base}"

[routing]
max_retries = 0
{extra}"""
    gw = Gateway(
        parse_config(text, source="t.toml", env={}),
        transport=HttpxTransport(httpx.AsyncClient()),
    )
    github = CopilotAuth(copilot or fake.copilot_settings())
    claude = ClaudeAuth(fake.claude_settings())
    gw.providers["copilot"].session = Session("copilot", store, github)  # type: ignore[attr-defined]
    gw.providers["anthropic_max"].session = Session(  # type: ignore[attr-defined]
        "anthropic", store, claude, retry_delays=retry_delays
    )
    return gw
