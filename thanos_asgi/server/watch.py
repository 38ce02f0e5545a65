"""`[server] watch_config = true`: reload when the config file's content changes.

The file is polled once a second with `stat` (no thread, no inotify dependency); only when
its size, mtime or inode moved is it read and hashed, and only a new content hash reloads.
So `touch` does nothing, and an editor's write-then-rename reloads once. A file that fails
to load keeps the previous config (the reload logs why) and is tried again once it changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

__all__ = ["ConfigWatcher"]

_log = logging.getLogger("thanos_asgi.serve")
Signature = tuple[int, int, int]


class ConfigWatcher:
    def __init__(self, path: Path, reload: Callable[[], object], interval: float = 1.0) -> None:
        self.path = path
        self.reload = reload
        self.interval = interval
        self.stat: Signature | None = None
        self.digest: str | None = None
        self.remember()

    def _stat(self) -> Signature | None:
        try:
            found = self.path.stat()
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino)

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def remember(self) -> None:
        """Take the file as it is now as seen (a reload from elsewhere read it)."""
        self.stat = self._stat()
        self.digest = self._digest()

    def poll(self) -> bool:
        """Check once; True when the content changed (and `reload` was called)."""
        stat = self._stat()
        if stat == self.stat:
            return False
        self.stat = stat
        digest = self._digest()
        if digest is None or digest == self.digest:
            return False
        self.digest = digest
        _log.info("%s changed; reloading", self.path)
        self.reload()
        return True

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.poll()
