"""`GET /admin/audit?limit=`: the newest admin actions, newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from thanos_asgi.frontends.admin._common import Caller, answer, integer, query
from thanos_asgi.governance.audit import MAX_LISTED

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange


async def listing(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    limit = integer(query(ex.scope), "limit", 100, 1, MAX_LISTED)
    await answer(ex, {"data": admin.audit.recent(limit)})
