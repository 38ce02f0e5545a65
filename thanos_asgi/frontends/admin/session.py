"""Dashboard sign-in: an admin key exchanged for a signed session cookie.

`POST /admin/session` with `Authorization: Bearer <admin key>` sets two cookies scoped to the
mount point: `thanos_session` (HttpOnly, SameSite=Strict, Secure over TLS, with an expiry)
holding `[key id, expiry, nonce]` signed with HMAC-SHA256, and `thanos_csrf` (readable by the
page's script) holding the CSRF token derived from the same session. Every state-changing call
made with the cookie must echo that token in `x-csrf-token` (double submit; the cookie is
SameSite=Strict besides). Calls with the admin key itself need no token. The signing secret
lives in the key store's file when there is one (so sessions survive restarts and are valid
in every worker), otherwise in this process. A session ends at its expiry, at sign-out, or
as soon as its key is revoked or no longer an admin key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.exceptions import AuthenticationError, PermissionDenied
from thanos_asgi.frontends.admin._common import Caller, answer
from thanos_asgi.frontends.asgi import Headers, Scope

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

SESSION_COOKIE = "thanos_session"
CSRF_COOKIE = "thanos_csrf"
LIFETIME = 8 * 3600  # seconds a session lasts
_MAX_TOKEN = 512


class Session(msgspec.Struct, array_like=True):
    key_id: str
    expires: int
    nonce: str


class Sessions:
    """Signs and checks session tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self, key_id: str, now: float | None = None) -> tuple[str, Session]:
        session = Session(key_id, int((now or time.time()) + LIFETIME), secrets.token_urlsafe(12))
        payload = _b64(msgspec.json.encode(session))
        return f"{payload}.{self._sign(payload)}", session

    def check(self, token: str) -> Session | None:
        """The session in a valid, unexpired token; None otherwise."""
        payload, _, signature = token.partition(".")
        if len(token) > _MAX_TOKEN or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            session = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=="), type=Session)
        except (ValueError, msgspec.DecodeError):
            return None
        return session if session.expires > time.time() else None

    def csrf(self, session: Session) -> str:
        return self._sign(f"csrf|{session.nonce}|{session.key_id}")

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                found, _, content = part.strip().partition("=")
                if found == name:
                    return content
    return None


def header_text(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def from_cookie(admin: AdminApi, scope: Scope, changes: bool) -> Caller:
    """The caller of a signed-in session; CSRF checked when the call `changes` something."""
    token = cookie(scope, SESSION_COOKIE)
    session = admin.sessions.check(token) if token else None
    if session is None:
        raise AuthenticationError(
            "the admin API needs an admin key (`Authorization: Bearer <key>`) or a dashboard"
            " session (sign in at /dashboard)",
            code="missing_api_key",
        )
    if session.key_id not in admin.admin_ids():
        raise AuthenticationError("the session's key was revoked or is no longer an admin key")
    if changes:
        sent = header_text(scope, b"x-csrf-token")
        if not sent or not hmac.compare_digest(sent, admin.sessions.csrf(session)):
            raise PermissionDenied("missing or wrong x-csrf-token header", code="csrf_failed")
    return Caller(session.key_id, "session")


def _cookies(scope: Scope, token: str, csrf: str, max_age: int) -> Headers:
    path = (scope.get("root_path", "") or "") + "/"
    secure = "; Secure" if scope.get("scheme") in ("https", "wss") else ""
    common = f"Path={path}; SameSite=Strict; Max-Age={max_age}{secure}"
    return [
        (b"set-cookie", f"{SESSION_COOKIE}={token}; HttpOnly; {common}".encode("latin-1")),
        (b"set-cookie", f"{CSRF_COOKIE}={csrf}; {common}".encode("latin-1")),
    ]


async def sign_in(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`POST /admin/session`: needs the admin key itself (a session cannot renew itself)."""
    if caller.via != "key":
        raise PermissionDenied("sign in with the admin key: `Authorization: Bearer <key>`")
    token, session = admin.sessions.issue(caller.key_id)
    csrf = admin.sessions.csrf(session)
    admin.audit.write(caller.key_id, "session.start")
    body = {"key_id": caller.key_id, "expires": session.expires, "csrf": csrf}
    await answer(ex, body, 200, _cookies(ex.scope, token, csrf, LIFETIME))


async def current(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`GET /admin/session`: who is signed in, until when, and the CSRF token."""
    token = cookie(ex.scope, SESSION_COOKIE)
    session = admin.sessions.check(token) if token else None
    body: dict[str, object] = {"key_id": caller.key_id, "via": caller.via}
    if session is not None and caller.via == "session":
        body.update(expires=session.expires, csrf=admin.sessions.csrf(session))
    await answer(ex, body)


async def sign_out(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`DELETE /admin/session`: the cookies are cleared."""
    admin.audit.write(caller.key_id, "session.end")
    await answer(ex, {"signed_out": True}, 200, _cookies(ex.scope, "", "", 0))
