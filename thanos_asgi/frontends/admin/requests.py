"""`/admin/requests`: the request log, read from the usage ledger, newest first.

Filters: `since`/`until` (unix seconds), `key`, `provider`, `model`, `status` (`ok`, `error`
for every failure, or an exact status such as `error:429`); `limit` rows (at most 500) and
`cursor` (the `next_cursor` of the previous page) for paging."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from thanos_asgi.exceptions import InvalidRequest, NotFound
from thanos_asgi.frontends.admin._common import Caller, answer, integer, number, query, tail, text
from thanos_asgi.frontends.asgi import route_path
from thanos_asgi.governance.ledger import COLUMNS
from thanos_asgi.governance.ledgers import UsageLedger

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

PREFIX = "/admin/requests/"
MAX_PAGE = 500
_SELECT = f"SELECT id, {', '.join(COLUMNS)} FROM requests"
_EQUAL = {"key": "key_id", "provider": "provider", "model": "model"}


def ledger_of(admin: AdminApi) -> UsageLedger:
    ledger = admin.gateway.ledger
    if ledger is None:
        raise NotFound("usage tracking is off ([cost] track_usage or no ledger_path)")
    return ledger


def _row(values: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(("id", *COLUMNS), values, strict=True))
    row["cached"] = bool(row["cached"])
    return row


def _filters(params: dict[str, str]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    values: list[Any] = []
    for name, column in (("since", "ts >= ?"), ("until", "ts < ?")):
        found = number(params, name, 0, 1e11)
        if found is not None:
            clauses.append(column)
            values.append(found)
    for name, column in _EQUAL.items():
        found_text = text(params, name)
        if found_text is not None:
            clauses.append(f"{column} = ?")
            values.append(found_text)
    status = text(params, "status")
    if status == "error":
        clauses.append("status LIKE 'error%'")
    elif status is not None:
        clauses.append("status = ?")
        values.append(status)
    return clauses, values


async def listing(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`GET /admin/requests`: one page of rows and the cursor of the next."""
    params = dict(query(ex.scope))
    clauses, values = _filters(params)
    limit = integer(params, "limit", 100, 1, MAX_PAGE)
    cursor = params.get("cursor")
    if cursor:
        if not cursor.isdigit() or len(cursor) > 18:
            raise InvalidRequest(
                "cursor must be the next_cursor of an earlier page", param="cursor"
            )
        clauses.append("id < ?")
        values.append(int(cursor))
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    sql = f"{_SELECT}{where} ORDER BY id DESC LIMIT ?"
    found = await asyncio.to_thread(ledger_of(admin).query, sql, [*values, limit + 1])
    rows = [_row(r) for r in found]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = str(rows[-1]["id"]) if more and rows else None
    await answer(ex, {"data": rows, "next_cursor": next_cursor})


async def one(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`GET /admin/requests/{request_id}`: that request's row."""
    request_id = tail(route_path(ex.scope), PREFIX)
    found = await asyncio.to_thread(
        ledger_of(admin).query, f"{_SELECT} WHERE request_id = ? ORDER BY id LIMIT 1", [request_id]
    )
    if not found:
        raise NotFound("there is no request with that id in the ledger")
    await answer(ex, _row(found[0]))
