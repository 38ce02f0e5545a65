"""The in-process cache store: an LRU bounded by bytes, entries expiring after their TTL."""

from __future__ import annotations

import time
from collections import OrderedDict

ENTRY_OVERHEAD = 64  # bytes counted per entry beyond its key and value (its bookkeeping)


class MemoryStore:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.evictions = 0
        self._bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        size = _size(key, value)
        if size > self.max_bytes:
            return  # bigger than the whole cache: never kept
        if key in self._entries:
            self._drop(key)
        while self._entries and self._bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        self._entries[key] = (time.monotonic() + ttl, value)
        self._bytes += size

    async def aclose(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= _size(key, value)


def _size(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD
