"""`/admin/keys`: client keys in the store `thanos keys` uses (never a secret or digest
listed; a new key's secret is in the creation answer only). Keys from the config file are
listed read-only. Every process re-reads the store within a second (`KeyRing`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from thanos_asgi.exceptions import InvalidRequest, NotFound
from thanos_asgi.frontends.admin._common import Caller, answer, decode, tail
from thanos_asgi.frontends.asgi import read_body, route_path
from thanos_asgi.governance.keys import KeyStore

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

PREFIX = "/admin/keys/"
_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
_Names = Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=100)]
_Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
_Usd = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
_BODY_LIMIT = 64 * 1024


class KeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: _Id
    models: _Names = []
    providers: _Names = []
    rpm: _Count | None = None
    tpm: _Count | None = None
    budget_usd: _Usd | None = None
    admin: bool = False


class KeyUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change; `null` clears a limit."""

    models: _Names | msgspec.UnsetType = msgspec.UNSET
    providers: _Names | msgspec.UnsetType = msgspec.UNSET
    rpm: _Count | msgspec.UnsetType | None = msgspec.UNSET
    tpm: _Count | msgspec.UnsetType | None = msgspec.UNSET
    budget_usd: _Usd | msgspec.UnsetType | None = msgspec.UNSET


def _store(admin: AdminApi) -> KeyStore:
    if admin.store is None:
        raise InvalidRequest(
            "this gateway has no key store: set [server] key_store, or create the first key"
            " with `thanos keys create`"
        )
    return admin.store


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "models": msgspec.json.decode(row["models"]),
        "providers": msgspec.json.decode(row["providers"]),
        "admin": bool(row["admin"]),
        "source": "store",
    }


async def listing(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`GET /admin/keys`: config keys (read-only) and the store's, revoked ones included."""
    found: list[dict[str, Any]] = [
        {
            "id": entry.id,
            "models": entry.models,
            "providers": entry.providers,
            "rpm": entry.rpm,
            "tpm": entry.tpm,
            "budget_usd": entry.budget_usd,
            "admin": entry.admin,
            "created": None,
            "revoked": None,
            "source": "config",
        }
        for entry in admin.config.server.keys
    ]
    if admin.store is not None:
        found += [_listed(row) for row in admin.store.listing()]
    await answer(ex, {"data": found})


async def create(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`POST /admin/keys`: 201 with the new key's secret, shown this once."""
    body: KeyCreate = decode(await read_body(ex.scope, ex.receive, _BODY_LIMIT), KeyCreate)
    if any(entry.id == body.id for entry in admin.config.server.keys):
        raise InvalidRequest(f"a key with id '{body.id}' exists already in the config")
    limits = msgspec.structs.asdict(body)
    key_id = limits.pop("id")
    secret = _store(admin).create(key_id, **limits)
    admin.audit.write(caller.key_id, "key.create", key_id, _shown(limits))
    await answer(ex, {"id": key_id, "secret": secret, **limits}, 201)


async def change(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`PATCH /admin/keys/{id}`: new limits or allow-lists, in force within a second."""
    key_id = tail(route_path(ex.scope), PREFIX)
    body: KeyUpdate = decode(await read_body(ex.scope, ex.receive, _BODY_LIMIT), KeyUpdate)
    limits = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
    if not _store(admin).update(key_id, **limits):
        raise NotFound(f"there is no active stored key '{key_id}'")
    admin.audit.write(caller.key_id, "key.update", key_id, _shown(limits))
    row = next(r for r in _store(admin).listing() if r["id"] == key_id)
    await answer(ex, _listed(row))


async def revoke(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`DELETE /admin/keys/{id}`: refused from then on (every process within a second)."""
    key_id = tail(route_path(ex.scope), PREFIX)
    if not _store(admin).revoke(key_id):
        raise NotFound(f"there is no active stored key '{key_id}'")
    admin.audit.write(caller.key_id, "key.revoke", key_id)
    await answer(ex, {"id": key_id, "revoked": True})


def _shown(limits: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in limits.items() if value not in (None, [], False)}
