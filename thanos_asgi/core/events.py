"""EventBus: a small in-process pub/sub for the admin feed (`GET /admin/events`).

The gateway publishes one event per finished request (its ledger row, as a dict); each
subscriber gets its own bounded queue, and a subscriber that falls behind loses its oldest
events rather than holding memory. Publishing with nobody listening costs one set lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

QUEUE_SIZE = 256  # events one subscriber may have pending before the oldest are dropped

Event = dict[str, Any]


class EventBus:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, event: Event) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()  # the oldest goes: a slow reader never grows memory
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Event]]:
        """`with bus.subscribe() as queue:` events published from now until the block ends."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
