"""Who is calling, and may they now: client keys and requests per minute, as over HTTP.

The same key ring as `AuthMiddleware` (`[[server.keys]]` plus the `thanos keys` store) and
the same rate-limit windows as `RateLimitMiddleware` (`rpm:key:<id>`, `rpm:ip:<address>` in
the gateway's state backend), so a key's limit is shared by its HTTP and gRPC calls. RPCs
that do what HTTP's admin paths do (`/auth/*`: InitiateOAuth) need an admin key once keys
exist, as AuthMiddleware's `ADMIN_PATHS` do; the check comes before the rate limit, as there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from thanos_asgi.context import KeyPolicy, Quota
from thanos_asgi.exceptions import AuthenticationError, PermissionDenied
from thanos_asgi.governance.windows import request_subject, take_request

if TYPE_CHECKING:
    from thanos_asgi.config import ServerConfig
    from thanos_asgi.core.gateway import Gateway


class KeyLookup(Protocol):
    """What is needed of a key ring (`thanos_asgi.governance.keys.KeyRing` is one)."""

    @property
    def active(self) -> bool: ...

    def lookup(self, secret: str) -> KeyPolicy | None: ...


class Access:
    def __init__(self, gateway: Gateway, keys: KeyLookup | None = None) -> None:
        server = gateway.config.server
        self.keys = keys if keys is not None else configured_keys(server)
        self.state = gateway.state
        self.rpm_per_ip = server.rpm_per_ip

    async def admit(
        self, context: Any, *, admin: bool = False, quota: Quota | None = None
    ) -> KeyPolicy | None:
        """The caller's key policy (None when the gateway has no keys), within its rpm (the
        count noted in `quota`, which the call's Context then carries so that the gateway
        does not count it again); with `admin`, a key that is not an admin key is refused
        (PermissionDenied)."""
        policy = self.authenticate(context)
        if admin and policy is not None and not policy.admin:
            raise PermissionDenied(f"the key '{policy.key_id}' is not an admin key")
        await self.limit(policy, context, quota)
        return policy

    def authenticate(self, context: Any) -> KeyPolicy | None:
        if self.keys is None or not self.keys.active:
            return None
        secret = _presented(context)
        if secret is None:
            raise AuthenticationError(
                "this gateway needs a client key: send the metadata "
                "`authorization: Bearer <key>` or `x-api-key: <key>`",
                code="missing_api_key",
            )
        policy = self.keys.lookup(secret)
        if policy is None:
            raise AuthenticationError("the client key is not valid (unknown or revoked)")
        return policy

    async def limit(
        self, policy: KeyPolicy | None, context: Any, quota: Quota | None = None
    ) -> None:
        subject, limit = request_subject(policy, peer_host(context.peer()), self.rpm_per_ip)
        if limit is not None:
            await take_request(self.state, subject, limit, quota)


def configured_keys(server: ServerConfig) -> KeyLookup | None:
    """`[[server.keys]]` and the key store, as `thanos serve` gives them to HTTP."""
    if not server.keys and not server.key_store:
        return None
    from thanos_asgi.governance.keys import KeyRing, KeyStore

    return KeyRing(server.keys, KeyStore(server.key_store) if server.key_store else None)


def metadata(context: Any, name: str) -> str:
    """One invocation metadata value ("" when absent)."""
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return ""


def peer_host(peer: str) -> str:
    """`ipv4:127.0.0.1:5000` -> `127.0.0.1`; `ipv6:%5B::1%5D:5000` -> `::1`; else as is."""
    kind, _, rest = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]")
    return peer


def _presented(context: Any) -> str | None:
    scheme, _, token = metadata(context, "authorization").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return metadata(context, "x-api-key").strip() or None
