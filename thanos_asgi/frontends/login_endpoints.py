"""`/auth/*`: provider logins over HTTP (and `initiate_oauth`, for the gRPC servicer).

    POST /auth/github      starts the GitHub device flow: answers the user code and the URL
                           at once; the gateway polls GitHub in the background and keeps the
                           login when the user approves (GET /auth/status shows the outcome)
    POST /auth/anthropic   {} -> the authorize URL (and its state); then
                           {"code": "<code#state>"} -> finishes the login
    GET  /auth/status      per login: logged in, expiry, masked identity, which instances use
                           it; never a token

A login belongs to every instance that uses it (`copilot`, `github_copilot`, ...); only
instances this gateway has configured can be logged in here. AuthMiddleware requires an admin
key on these paths once client keys exist.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.exceptions import InvalidRequest, NotFound, ThanosError
from thanos_asgi.frontends.asgi import read_body, respond
from thanos_asgi.logins import (
    ANTHROPIC,
    COPILOT,
    Authorization,
    ClaudeAuth,
    CopilotAuth,
    DeviceCode,
    LoginFailed,
    Session,
    Token,
    split_paste,
)
from thanos_asgi.sanitize import decode as bounded_decode

if TYPE_CHECKING:
    from thanos_asgi.core.gateway import Gateway
    from thanos_asgi.frontends.app import Exchange, ThanosApp

log = logging.getLogger("thanos_asgi.logins")
_encode = msgspec.json.Encoder().encode
ALIASES = {"github": COPILOT, "github_copilot": COPILOT, "claude": ANTHROPIC}
MAX_PENDING = 16


def logins(gateway: Gateway) -> dict[str, tuple[list[str], Session]]:
    """Login name -> (the instances using it, the session of the first one)."""
    found: dict[str, tuple[list[str], Session]] = {}
    for name, provider in gateway.providers.items():
        session = getattr(provider, "session", None)
        if isinstance(session, Session):
            found.setdefault(session.name, ([], session))[0].append(name)
    return found


def _login(gateway: Gateway, provider: str) -> Session:
    """The session for an instance name (`anthropic_max`) or a login name (`copilot`)."""
    session = getattr(gateway.providers.get(provider), "session", None)
    if isinstance(session, Session):
        return session
    name = ALIASES.get(provider, provider)
    found = logins(gateway).get(name)
    if found is None:
        raise NotFound(f"no provider in this gateway logs in as '{provider}'")
    return found[1]


async def _logged_in(gateway: Gateway, session: Session, token: Token) -> dict[str, Any]:
    """Keep the token; every instance of this login uses it now, circuits closed."""
    await session.save(token)
    instances, _ = logins(gateway).get(session.name, ([], session))
    for name in instances:
        provider_session = getattr(gateway.providers[name], "session", None)
        if isinstance(provider_session, Session) and provider_session is not session:
            provider_session.reload()
        gateway.health[name].breaker.success()
    log.info("%s: logged in as %s", session.name, token.identity)
    return {"provider": session.name, **session.describe()}


# -- GitHub Copilot ----------------------------------------------------------------------------


async def start_github(gateway: Gateway, provider: str = COPILOT) -> dict[str, Any]:
    session = _login(gateway, provider)
    auth = session.refresher
    if not isinstance(auth, CopilotAuth):
        raise InvalidRequest(f"'{provider}' does not log in with GitHub", param="provider")
    code = await auth.device_code()
    session.flow = "pending"
    session.track(asyncio.get_running_loop().create_task(_finish_github(gateway, session, code)))
    return {
        "provider": session.name,
        "auth_url": code.verification_uri,
        "verification_uri": code.verification_uri,
        "user_code": code.user_code,
        "expires_in": int(code.expires_in),
        "interval": code.interval,
    }


async def _finish_github(gateway: Gateway, session: Session, code: DeviceCode) -> None:
    assert isinstance(session.refresher, CopilotAuth)
    try:
        token = await session.refresher.login(code)
    except ThanosError as exc:
        session.flow = f"failed: {session.scrub(exc.message)}"
        log.warning("%s: login failed: %s", session.name, session.flow)
        return
    await _logged_in(gateway, session, token)


# -- Anthropic ---------------------------------------------------------------------------------


def start_anthropic(gateway: Gateway, provider: str = ANTHROPIC) -> dict[str, Any]:
    session = _login(gateway, provider)
    auth = session.refresher
    if not isinstance(auth, ClaudeAuth):
        raise InvalidRequest(f"'{provider}' does not log in with Anthropic", param="provider")
    pending = _pending(session, auth.clock())
    authorization = auth.authorize()
    pending[authorization.state] = authorization
    session.flow = "pending"
    return {
        "provider": session.name,
        "auth_url": authorization.url,
        "state": authorization.state,
        "expires_in": int(authorization.expires_at - auth.clock()),
    }


async def finish_anthropic(gateway: Gateway, pasted: str, provider: str = ANTHROPIC) -> Any:
    session = _login(gateway, provider)
    auth = session.refresher
    if not isinstance(auth, ClaudeAuth):
        raise InvalidRequest(f"'{provider}' does not log in with Anthropic", param="provider")
    _, state = split_paste(pasted)
    authorization = _pending(session, auth.clock()).pop(state, None)
    if authorization is None:
        raise LoginFailed(
            "no login is waiting for this code (paste the whole `code#state`, within 10 minutes)",
            code="bad_state",
        )
    token = await auth.exchange(authorization, pasted)
    return await _logged_in(gateway, session, token)


def _pending(session: Session, now: float) -> dict[str, Authorization]:
    """The session's unfinished Anthropic logins, expired ones dropped (and at most a few)."""
    pending: dict[str, Authorization] = session.pending
    for state in [s for s, a in pending.items() if a.expires_at <= now]:
        del pending[state]
    while len(pending) >= MAX_PENDING:
        del pending[next(iter(pending))]
    return pending


# -- front-ends --------------------------------------------------------------------------------


async def initiate_oauth(gateway: Gateway, provider: str) -> dict[str, Any]:
    """Start a login for an instance or login name: `auth_url`, `user_code` (device flow),
    `state` (Anthropic; finish with POST /auth/anthropic) and `expires_in`."""
    session = _login(gateway, provider)
    if isinstance(session.refresher, CopilotAuth):
        started = await start_github(gateway, provider)
    else:
        started = start_anthropic(gateway, provider)
    return {
        "provider": session.name,
        "auth_url": started["auth_url"],
        "user_code": started.get("user_code", ""),
        "state": started.get("state", ""),
        "expires_in": started["expires_in"],
    }


def status(gateway: Gateway) -> dict[str, Any]:
    return {
        name: {**session.describe(), "providers": instances}
        for name, (instances, session) in logins(gateway).items()
    }


async def github(app: ThanosApp, ex: Exchange) -> None:
    body = await _json(app, ex)
    answer = await start_github(app.gateway, str(body.get("provider") or COPILOT))
    await respond(ex.send, 200, _encode(answer))


async def anthropic(app: ThanosApp, ex: Exchange) -> None:
    body = await _json(app, ex)
    provider = str(body.get("provider") or ANTHROPIC)
    code = body.get("code")
    if code is None:
        answer = start_anthropic(app.gateway, provider)
    elif isinstance(code, str) and code.strip():
        answer = await finish_anthropic(app.gateway, code, provider)
    else:
        raise InvalidRequest("`code` must be the `code#state` shown after approving", param="code")
    await respond(ex.send, 200, _encode(answer))


async def auth_status(app: ThanosApp, ex: Exchange) -> None:
    await respond(ex.send, 200, _encode(status(app.gateway)))


async def _json(app: ThanosApp, ex: Exchange) -> dict[str, Any]:
    raw = await read_body(ex.scope, ex.receive, app.limit)
    if not raw.strip():
        return {}
    try:
        data = bounded_decode(raw)
    except msgspec.DecodeError:
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return data
