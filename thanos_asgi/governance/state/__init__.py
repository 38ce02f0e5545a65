"""Shared state: rate-limit windows, budget reservations and spend, small shared records.

`open_backend(config.state)` gives a `MemoryBackend` (one process; the default) or a
`RedisBackend` (`[state] backend = "redis"`, several gateway processes sharing one key
space). Limits and budgets reserve atomically before a call and settle after it, so
concurrent requests cannot overspend. redis-py is imported only when Redis is configured.
"""

from __future__ import annotations

from thanos_asgi.config import StateConfig
from thanos_asgi.exceptions import ConfigError
from thanos_asgi.governance.state._base import (
    GRACE,
    SpendLost,
    SpendSettling,
    StateBackend,
    StateUnavailable,
    WindowResult,
)
from thanos_asgi.governance.state._memory import MemoryBackend

__all__ = [
    "GRACE",
    "MemoryBackend",
    "SpendLost",
    "SpendSettling",
    "StateBackend",
    "StateUnavailable",
    "WindowResult",
    "open_backend",
]


def open_backend(config: StateConfig) -> StateBackend:
    """The backend `config` names; ConfigError if Redis is asked for but cannot be used."""
    if config.backend == "memory":
        return MemoryBackend()
    if not config.url:
        raise ConfigError(
            'backend = "redis" needs a url, e.g. "redis://localhost:6379/0"', path="state.url"
        )
    try:
        from thanos_asgi.governance.state._redis import RedisBackend
    except ImportError:
        raise ConfigError(
            'backend = "redis" needs redis-py: pip install "thanos-asgi[redis]"',
            path="state.backend",
        ) from None
    try:
        return RedisBackend(config.url, fail_open=config.fail_open)
    except ValueError as error:  # redis-py's verdict on the URL; it never echoes a password
        raise ConfigError(f"not a usable Redis URL: {error}", path="state.url") from None
