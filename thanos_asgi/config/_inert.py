"""Settings that load but do nothing yet, said out loud once per load (never silently dropped).

Task tables' `cache_ttl_hours` (`[routing.<mode>] <task> = { ..., cache_ttl_hours = 24 }`) is
the response cache's TTL for that task; with the cache off (`[cache] enabled = false`, the
default) it does nothing, so a warning names every place it is set.
"""

from __future__ import annotations

import logging

from thanos_asgi.config.schema import Config, TaskTable

log = logging.getLogger("thanos_asgi.config")


def inert_settings(config: Config) -> list[str]:
    """The key paths of settings in `config` that have no effect as configured."""
    if config.cache.enabled:
        return []
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
            "%s: %s has no effect: the response cache is off ([cache] enabled = false)",
            config.source or "config",
            ", ".join(paths),
        )
