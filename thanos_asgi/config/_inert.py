"""Settings that load but do nothing yet, said out loud once per load (never silently dropped).

Task tables' `cache_ttl_hours` (`[routing.<mode>] <task> = { ..., cache_ttl_hours = 24 }`) is
kept for the response cache, which does not exist yet: users' configs carry it and must keep
loading, so it is accepted, and a warning names every place it is set.
"""

from __future__ import annotations

import logging

from thanos_asgi.config.schema import Config, TaskTable

log = logging.getLogger("thanos_asgi.config")


def inert_settings(config: Config) -> list[str]:
    """The key paths of settings in `config` that have no effect in this version."""
    return [
        f"routing.{mode}.{task}.cache_ttl_hours"
        for mode, table in config.routing.modes.items()
        for task, route in table.items()
        if isinstance(route, TaskTable) and route.cache_ttl_hours is not None
    ]


def warn_inert(config: Config) -> None:
    paths = inert_settings(config)
    if paths:
        log.warning(
            "%s: %s has no effect: thanos-asgi has no response cache yet (the setting is kept "
            "for when it has one)",
            config.source or "config",
            ", ".join(paths),
        )
