"""Where the response cache keeps its entries: bytes under a key, for a time.

`MemoryStore` is an LRU bounded by the bytes it holds (keys and values), counting what it
evicts; `RedisStore` keeps them in Redis with a TTL (`[state] url`), so several gateway
processes share one cache. Values are opaque bytes (the core encodes them with msgspec);
keys are `<scope>:<digest>`. redis-py is imported only when Redis is configured.
"""

from __future__ import annotations

from typing import Protocol

from thanos_asgi.config import Config
from thanos_asgi.exceptions import ConfigError
from thanos_asgi.governance.cache._memory import MemoryStore

__all__ = ["CacheStore", "MemoryStore", "open_store"]


class CacheStore(Protocol):
    evictions: int

    @property
    def stored_bytes(self) -> int: ...

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


def open_store(config: Config) -> CacheStore:
    """The store `[cache] backend` names; ConfigError when Redis is asked for without a url."""
    if config.cache.backend == "memory":
        return MemoryStore(config.cache.max_bytes)
    if not config.state.url:
        raise ConfigError(
            '[cache] backend = "redis" needs [state] url, e.g. "redis://localhost:6379/0"',
            path="state.url",
        )
    from thanos_asgi.governance.cache._redis import RedisStore

    return RedisStore(config.state.url)
