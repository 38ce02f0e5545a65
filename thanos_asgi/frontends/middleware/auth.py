"""AuthMiddleware: client keys from `Authorization: Bearer`, `x-api-key`, `x-goog-api-key`
or (as Gemini clients send it) `?key=`.

With no keys configured it lets everything through (the gateway then binds loopback only).
With keys: open paths (`/health*`) need none, but a valid key sent there is still recognised
(`/health/ready` shows details to admin keys only); elsewhere a missing or unknown key gets
401, a non-admin key on an admin path gets 403, and
the key's policy goes into `scope["thanos.auth"]` for the endpoints (model allow-lists are
checked where the model is known). A host app that authenticates on its own may set
`scope["thanos.auth"]` before calling; this middleware then leaves the request alone.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from thanos_asgi.context import KeyPolicy
from thanos_asgi.exceptions import AuthenticationError, PermissionDenied, ThanosError
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send, route_path
from thanos_asgi.frontends.errors import send_error
from thanos_asgi.governance.keys import KeyRing

OPEN_PATHS = ("/health",)
ADMIN_PATHS = ("/auth", "/v1/usage", "/v1/keys")


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        open_paths: tuple[str, ...] = OPEN_PATHS,
        admin_paths: tuple[str, ...] = ADMIN_PATHS,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.open_paths = open_paths
        self.admin_paths = admin_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "thanos.auth" in scope or not self.keyring.active:
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path.startswith(self.open_paths):
            scope["thanos.keys_active"] = True  # open, but what it shows may depend on the key
            secret = _presented(scope)
            policy = self.keyring.lookup(secret) if secret is not None else None
            if policy is not None:
                scope["thanos.auth"] = {"key_id": policy.key_id, "policy": policy}
            await self.app(scope, receive, send)
            return
        try:
            policy = self._authenticate(scope)
            if path.startswith(self.admin_paths) and not policy.admin:
                raise PermissionDenied(f"the key '{policy.key_id}' is not an admin key")
        except ThanosError as exc:
            challenge = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            await send_error(scope, send, exc, challenge)
            return
        scope["thanos.auth"] = {"key_id": policy.key_id, "policy": policy}
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> KeyPolicy:
        secret = _presented(scope)
        if secret is None:
            raise AuthenticationError(
                "this gateway needs a client key: send `Authorization: Bearer <key>` "
                "or `x-api-key: <key>`",
                code="missing_api_key",
            )
        policy = self.keyring.lookup(secret)
        if policy is None:
            raise AuthenticationError("the client key is not valid (unknown or revoked)")
        return policy


def _presented(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name in (b"x-api-key", b"x-goog-api-key"):
            text = bytes(value).decode("latin-1").strip()
            if text:
                return text
    query = scope.get("query_string", b"")
    if b"key=" in query:
        keys = parse_qs(query.decode("latin-1")).get("key")
        return keys[0] if keys and keys[0] else None
    return None
