"""Noticing a client that leaves, without a task per request.

A request still going `WATCH_AFTER` seconds after it began gets a task that waits for
`http.disconnect`; one timer per event loop (`Sweeper`) starts those tasks, so the many
requests that end sooner never pay for one. `WatchedDispatch` covers the wait for a provider
to accept a request: a client that leaves meanwhile cancels that wait (and with it the
upstream request), which surfaces as `ClientLeft`. `sse.py` watches open streams the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Protocol

from thanos_asgi.core.reply import Dispatch, Reply
from thanos_asgi.frontends.asgi import Receive

WATCH_AFTER = 0.05  # seconds into a request before the client is watched


class Watched(Protocol):
    def start_watching(self) -> None: ...


class ClientLeft(Exception):
    """The client disconnected while the request waited; nothing is left to answer."""


class Sweeper:
    """Starts the watcher of each item still waiting `WATCH_AFTER` seconds after it was
    added: one timer per event loop for all of them, instead of a timer or a task each."""

    _loops: dict[asyncio.AbstractEventLoop, Sweeper] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[Watched, float] = {}  # in the order they began
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Sweeper:
        sweeper = cls._loops.get(loop)
        if sweeper is None:
            sweeper = cls._loops[loop] = cls(loop)
        return sweeper

    def add(self, item: Watched) -> None:
        self.waiting[item] = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(WATCH_AFTER, self.sweep)

    def sweep(self) -> None:
        self.timer = None
        due = self.loop.time() - WATCH_AFTER * 0.99  # (timers may fire a hair early)
        for item, began in list(self.waiting.items()):
            if began > due:
                self.timer = self.loop.call_at(began + WATCH_AFTER, self.sweep)
                return
            del self.waiting[item]
            item.start_watching()
        del self._loops[self.loop]  # nothing left to watch: forget this loop


class WatchedDispatch:
    """`gateway.dispatch(...)` with the client watched until a provider accepted the request:
    a client that leaves meanwhile cancels the attempts (closing the upstream request at
    most ~`WATCH_AFTER` seconds later), and entering raises `ClientLeft`."""

    __slots__ = ("dispatch", "left", "receive", "task", "watcher")

    def __init__(self, dispatch: Dispatch, receive: Receive) -> None:
        self.dispatch, self.receive = dispatch, receive
        self.left = False
        self.watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reply:
        task = asyncio.current_task()
        assert task is not None
        self.task: asyncio.Task[Any] = task
        loop = task.get_loop()
        sweeper = Sweeper._loops.get(loop) or Sweeper.of(loop)
        sweeper.add(self)
        try:
            return await self.dispatch.__aenter__()
        except asyncio.CancelledError:
            if not self.left:
                raise
            task.uncancel()
            raise ClientLeft("the client left before the provider answered") from None
        finally:
            sweeper.waiting.pop(self, None)
            if self.watcher is not None:
                self.watcher.cancel()
                self.watcher = None  # its traceback holds our frame: no cycle

    def start_watching(self) -> None:
        self.watcher = self.task.get_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.left = True
        self.task.cancel()

    def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Coroutine[Any, Any, None]:
        return self.dispatch.__aexit__(typ, exc, tb)  # (awaited by `async with`: no extra frame)
