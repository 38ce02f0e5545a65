"""`[cache]`: the response cache (see `core/cache.py`).

[cache]
enabled = true
backend = "memory"          # memory | redis (uses [state] url)
ttl_seconds = 3600          # a task table's cache_ttl_hours overrides it for that task
max_bytes = 268435456       # memory backend: LRU bound on the bytes stored
scope = "key"               # key | global: whether clients with different keys share
when = "always"             # always | deterministic (temperature 0 or a seed)
[cache.semantic]            # optional
embedding_model = "ollama/nomic-embed-text"
threshold = 0.95
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["CacheConfig", "SemanticCacheConfig"]

MIB = 1024 * 1024


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """As `schema._Section` (not imported: `schema` imports this module)."""


class SemanticCacheConfig(_Table, frozen=True):
    embedding_model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95


class CacheConfig(_Table, frozen=True):
    enabled: bool = False
    backend: Literal["memory", "redis"] = "memory"
    ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600
    max_bytes: Annotated[int, msgspec.Meta(gt=0)] = 256 * MIB
    scope: Literal["key", "global"] = "key"
    when: Literal["always", "deterministic"] = "always"
    semantic: SemanticCacheConfig | None = None
