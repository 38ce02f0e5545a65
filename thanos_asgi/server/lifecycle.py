"""What `thanos serve` does around the servers: reload on SIGHUP or a changed config file,
and tell systemd (`$NOTIFY_SOCKET`) when it is ready, reloading and stopping.

    life = Lifecycle(reloadable, notifier, watched=Path("thanos.toml"))
    run(serve_http(server, life))      # HTTP alone; with gRPC, `serve_both(ready=life.ready,
                                       # reload=life.reload)` does the same
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from thanos_asgi.server.notify import Notifier
from thanos_asgi.server.watch import ConfigWatcher

if TYPE_CHECKING:
    from thanos_asgi.frontends.stack import Reloadable

__all__ = ["HttpServer", "Lifecycle", "serve_http"]

_log = logging.getLogger("thanos_asgi.serve")


class Lifecycle:
    def __init__(self, app: Reloadable, notifier: Notifier, *, watched: Path | None = None) -> None:
        """`watched`: the config file to reload from when its content changes."""
        self.app = app
        self.notifier = notifier
        self.watcher = ConfigWatcher(watched, self.reload) if watched is not None else None
        self._watching: asyncio.Task[None] | None = None

    def ready(self) -> None:
        """Both servers listen: tell systemd, start watching the config file."""
        if self.watcher is not None and self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self.watcher.run())
            _log.info("watching %s for changes", self.watcher.path)
        self.notifier.ready(self._status())

    def reload(self) -> bool:
        """Reload the config (SIGHUP, or the watched file changed); a bad one keeps the old."""
        self.notifier.reloading()
        if self.watcher is not None:
            self.watcher.remember()  # what is loaded now is what the file holds now
        done = self.app.reload()
        self.notifier.ready(self._status())
        return done

    def _status(self) -> str:
        return f"serving {len(self.app.gateway.providers)} providers"

    async def aclose(self) -> None:
        self.notifier.stopping()
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching


class HttpServer(uvicorn.Server):
    """uvicorn, except that the signal which stopped it is not raised again on the way out
    (uvicorn's way of exiting "killed by SIGTERM"): `thanos serve` still has its PID file to
    remove, and exits 0 after a graceful stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


async def serve_http(server: uvicorn.Server, life: Lifecycle) -> None:
    """Run uvicorn (it handles SIGINT/SIGTERM) with SIGHUP reloading the config."""
    loop = asyncio.get_running_loop()
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hangup is not None:
        loop.add_signal_handler(hangup, life.reload)
    task = asyncio.create_task(server.serve())
    try:
        if await _started(server, task):
            life.ready()
        await task
    finally:
        if hangup is not None:
            loop.remove_signal_handler(hangup)
        await life.aclose()


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    """Wait until uvicorn listens (True) or has given up (False)."""
    while not server.started:
        if task.done():
            return False
        await asyncio.sleep(0.01)
    return True
