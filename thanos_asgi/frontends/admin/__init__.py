"""The admin API (`/admin/...`) and the web dashboard (`/dashboard`), one module per concern.

Every admin route needs an admin key: `Authorization: Bearer <admin key>` (recognised by
`AuthMiddleware`, which leaves these paths to us), or a dashboard session made from one
(`session.py`: signed cookie, and an `x-csrf-token` on every call that changes something).
Without either the answer is 401; a key that is not an admin key gets 403. A gateway with no
admin key at all has no admin API (every call 401). `[server] dashboard = false` removes the
routes altogether.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import PermissionDenied
from thanos_asgi.frontends.admin import (
    audit,
    config,
    dashboard,
    events,
    keys,
    providers,
    requests,
    session,
    stats,
)
from thanos_asgi.frontends.admin._common import Caller
from thanos_asgi.governance.audit import AuditLog
from thanos_asgi.governance.keys import KeyStore

if TYPE_CHECKING:
    from thanos_asgi.config import Config
    from thanos_asgi.core.gateway import Gateway
    from thanos_asgi.frontends.app import Exchange

Handler = Callable[["Exchange"], Awaitable[None]]
Route = Callable[["AdminApi", "Exchange", Caller], Awaitable[None]]
OPEN_PATHS = ("/admin", "/dashboard")  # AuthMiddleware lets these through: checked here
# path templates and the prefix their parameter follows
TEMPLATES = {keys.PREFIX: "/admin/keys/{id}", requests.PREFIX: "/admin/requests/{request_id}"}
_SAFE = frozenset(("GET", "HEAD"))


class AdminApi:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config: Config = gateway.config
        path = self.config.server.key_store
        self.store = KeyStore(path) if path else None
        self.audit = AuditLog(path or ":memory:")
        self.sessions = session.Sessions(self.audit.session_secret())

    def admin_ids(self) -> set[str]:
        """The ids of every admin key in force (config and store)."""
        found = {entry.id for entry in self.config.server.keys if entry.admin}
        if self.store is not None:
            found.update(p.key_id for _, p in self.store.active() if p.admin)
        return found

    def routes(self) -> dict[str, dict[str, Handler]]:
        guard = self._guard
        return {
            "/admin/session": {
                "POST": guard(session.sign_in),
                "GET": guard(session.current),
                "DELETE": guard(session.sign_out),
            },
            "/admin/keys": {"GET": guard(keys.listing), "POST": guard(keys.create)},
            "/admin/keys/{id}": {"PATCH": guard(keys.change), "DELETE": guard(keys.revoke)},
            "/admin/providers": {"GET": guard(providers.listing)},
            "/admin/requests": {"GET": guard(requests.listing)},
            "/admin/requests/{request_id}": {"GET": guard(requests.one)},
            "/admin/stats": {"GET": guard(stats.series)},
            "/admin/config": {"GET": guard(config.show)},
            "/admin/config/validate": {"POST": guard(config.validate)},
            "/admin/config/reload": {"POST": guard(config.reload)},
            "/admin/events": {"GET": guard(events.stream)},
            "/admin/audit": {"GET": guard(audit.listing)},
            dashboard.PATH: {"GET": dashboard.page},
            "/dashboard/{file}": {"GET": dashboard.asset},
        }

    def _guard(self, route: Route) -> Handler:
        async def guarded(ex: Exchange) -> None:
            caller = self.caller(ex)
            await route(self, ex, caller)

        return guarded

    def caller(self, ex: Exchange) -> Caller:
        """The admin making this call; 401 or 403 (CSRF included) otherwise."""
        auth = ex.scope.get("thanos.auth")
        if auth is not None:
            policy = auth.get("policy")
            if policy is None or not policy.admin:
                raise PermissionDenied(f"the key '{auth.get('key_id')}' is not an admin key")
            return Caller(policy.key_id, "key")
        changes = ex.scope["method"] not in _SAFE
        return session.from_cookie(self, ex.scope, changes)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.audit.close()


def template(path: str) -> str | None:
    """The route template a parameterised admin or dashboard path is served by."""
    for prefix, name in TEMPLATES.items():
        if path.startswith(prefix):
            return name
    return "/dashboard/{file}" if path.startswith(dashboard.PREFIX) else None


__all__ = ["OPEN_PATHS", "AdminApi", "template"]
