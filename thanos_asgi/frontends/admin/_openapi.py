"""The admin API and dashboard routes, described for `/openapi.json` (`frontends/openapi.py`
adds these to its table)."""

from __future__ import annotations

from typing import Any

from thanos_asgi.frontends.admin.dashboard import ASSETS
from thanos_asgi.frontends.admin.keys import KeyCreate, KeyUpdate
from thanos_asgi.frontends.openapi import Operation, Param

_OBJECT = dict[str, Any]
_TEXT = {"type": "string", "maxLength": 256}
_TIME = {"type": "number", "minimum": 0}
_REQUESTS = (
    Param("since", _TIME),
    Param("until", _TIME),
    Param("key", _TEXT),
    Param("provider", _TEXT),
    Param("model", _TEXT),
    Param("status", _TEXT),
    Param("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
)
_DURATION = {"type": "string", "pattern": "^[0-9]{1,7}[smhd]?$"}
_STATS = (
    Param("window", _DURATION),
    Param("step", _DURATION),
    Param("by", {"type": "string", "enum": ["provider", "model", "key"]}),
)
_KEY_ID = (Param("id", _TEXT, "path"),)

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/admin/session", "Dashboard sign-in (admin key)", response=_OBJECT),
    Operation("get", "/admin/session", "Dashboard session", response=_OBJECT),
    Operation("delete", "/admin/session", "Dashboard sign-out", response=_OBJECT),
    Operation("get", "/admin/keys", "Client keys", response=_OBJECT),
    Operation("post", "/admin/keys", "Create a key", KeyCreate, _OBJECT, ok="201"),
    Operation("patch", "/admin/keys/{id}", "Change a key", KeyUpdate, _OBJECT, params=_KEY_ID),
    Operation("delete", "/admin/keys/{id}", "Revoke a key", response=_OBJECT, params=_KEY_ID),
    Operation("get", "/admin/providers", "Provider instances", response=_OBJECT),
    Operation("get", "/admin/requests", "Request log", response=_OBJECT, params=_REQUESTS),
    Operation(
        "get",
        "/admin/requests/{request_id}",
        "One request",
        response=_OBJECT,
        params=(Param("request_id", _TEXT, "path"),),
    ),
    Operation("get", "/admin/stats", "Time series", response=_OBJECT, params=_STATS),
    Operation("get", "/admin/config", "Config (secrets masked)", response=_OBJECT),
    Operation(
        "post",
        "/admin/config/validate",
        "Dry-run a config",
        str,
        _OBJECT,
        request_media="text/plain",
    ),
    Operation("post", "/admin/config/reload", "Reload the config", response=_OBJECT),
    Operation("get", "/admin/events", "Live feed", media="text/event-stream"),
    Operation(
        "get",
        "/admin/audit",
        "Audit log",
        response=_OBJECT,
        params=(Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),),
    ),
    Operation("get", "/dashboard", "Web dashboard", media="text/html"),
    Operation(
        "get",
        "/dashboard/{file}",
        "Dashboard files",
        media="text/javascript",
        extra_media=("text/css",),
        params=(Param("file", {"type": "string", "enum": list(ASSETS)}, "path"),),
    ),
)
