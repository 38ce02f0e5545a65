"""The shared cache store: entries in Redis under `thanos:cache:<key>`, with Redis' own TTL.

An unreachable Redis makes the cache miss (and not store), never the request fail: the
cache is an optimisation, the provider is still there."""

from __future__ import annotations

import logging
import math

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("thanos_asgi.governance.cache")
PREFIX = "thanos:cache:"
_FAILURES = (rex.RedisError, OSError)


class RedisStore:
    def __init__(self, url: str, *, timeout: float = 2.0, max_connections: int = 16) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = aioredis.Redis.from_pool(pool)
        self.evictions = 0  # Redis evicts by its own policy; not counted here
        self._written = 0
        self._down = False

    @property
    def stored_bytes(self) -> int:
        """Bytes this process stored (Redis holds what every process stored)."""
        return self._written

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(PREFIX + key)
        except _FAILURES as exc:
            self._failed(exc)
            return None
        self._back()
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._client.set(PREFIX + key, value, px=max(math.ceil(ttl * 1000), 1))
        except _FAILURES as exc:
            self._failed(exc)
            return
        self._back()
        self._written += len(value)

    def _failed(self, exc: BaseException) -> None:
        """Once per outage, not once per request: a down Redis must not flood the log."""
        if not self._down:
            self._down = True
            log.warning(
                "the cache store is unavailable (%s): misses, nothing stored, until it is back",
                type(exc).__name__,
            )

    def _back(self) -> None:
        if self._down:
            self._down = False
            log.info("the cache store is reachable again")

    async def aclose(self) -> None:
        await self._client.aclose()
