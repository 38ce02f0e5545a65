"""`/admin/config`: the running config (secrets masked), a dry run of a posted TOML file,
and a reload from the config file (when the app runs under `thanos serve`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from thanos_asgi.config.describe import redacted
from thanos_asgi.config.load import parse_config
from thanos_asgi.exceptions import ConfigError, InvalidRequest
from thanos_asgi.frontends.admin._common import Caller, answer
from thanos_asgi.frontends.asgi import read_body

if TYPE_CHECKING:
    from thanos_asgi.frontends.admin import AdminApi
    from thanos_asgi.frontends.app import Exchange

MAX_CONFIG_BYTES = 1024 * 1024
RELOAD = "thanos.reload"  # scope key: `Reloadable.reload`, set by the app `thanos serve` runs
_LINE = re.compile(r"\bline (\d+)\b")


async def show(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`GET /admin/config`: the config in force, as `thanos config show` prints it."""
    await answer(ex, redacted(admin.config))


async def validate(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`POST /admin/config/validate`: the body (TOML) checked as `thanos serve` would load
    it, `${VAR}` left empty; nothing changes. 200 either way: `valid`, else `error` and,
    for a TOML syntax error, its `line`."""
    raw = await read_body(ex.scope, ex.receive, MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the config must be UTF-8 text") from None
    try:
        config = parse_config(text, source="posted config", env={})
    except ConfigError as exc:
        found = _LINE.search(exc.message)
        line = int(found[1]) if found else None
        await answer(ex, {"valid": False, "error": exc.message, "line": line})
        return
    await answer(ex, {"valid": True, "providers": sorted(config.providers)})


async def reload(admin: AdminApi, ex: Exchange, caller: Caller) -> None:
    """`POST /admin/config/reload`: re-read the config file now, as SIGHUP does."""
    reloader: Callable[[], bool] | None = ex.scope.get(RELOAD)
    if reloader is None:
        raise InvalidRequest("this app cannot reload itself (it is not run by `thanos serve`)")
    reloaded = reloader()
    admin.audit.write(caller.key_id, "config.reload", "", {"reloaded": reloaded})
    await answer(ex, {"reloaded": reloaded})
