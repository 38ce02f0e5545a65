"""`[models_dev]`: keep model prices fresh from models.dev while the gateway runs.

    [models_dev]
    enabled = true
    url = "https://models.dev/api.json"   # or a local copy: "/srv/models-dev/api.json"
    cache_ttl = 3600                       # seconds between refreshes; 0: once, at start

Until the first refresh succeeds (and whenever one fails) the prices in use are the ones
already held: at first the snapshot bundled with thanos-asgi. A failed refresh is logged once
per attempt and waits another `cache_ttl`; it never stops the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.config.describe import mask_url
from thanos_asgi.governance.pricing import PriceBook, PriceTable, refresh

if TYPE_CHECKING:
    from thanos_asgi.config import ModelsDevConfig
    from thanos_asgi.upstream import Transport

__all__ = ["PriceRefresher"]

log = logging.getLogger("thanos_asgi.pricing")


class PriceRefresher:
    """Replaces `book.table` from `config.url` every `config.cache_ttl` seconds, in a task
    started with the gateway (or on its first request) and stopped with it."""

    def __init__(self, book: PriceBook, config: ModelsDevConfig) -> None:
        self.book = book
        self.config = config
        self._task: asyncio.Task[None] | None = None
        self._transport: Transport | None = None

    def start(self) -> None:
        if self._task is None and self.config.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    async def _run(self) -> None:
        while True:
            await self.refresh_once()
            if not self.config.cache_ttl:
                return
            await asyncio.sleep(self.config.cache_ttl)

    async def refresh_once(self) -> bool:
        """One refresh now; True when the table was replaced."""
        url, shown = self.config.url, mask_url(self.config.url)
        if url.startswith(("http://", "https://")):
            table = await refresh(url, self._http())
        else:
            table = await asyncio.to_thread(_from_file, Path(url.removeprefix("file://")))
        if table is None:
            log.warning("could not refresh model prices from %s; keeping the ones in use", shown)
            return False
        self.book.table = table
        log.info(
            "model prices refreshed from %s (%d models, as of %s)", url, len(table), table.as_of
        )
        return True

    def _http(self) -> Transport:
        if self._transport is None:
            from thanos_asgi.upstream.h1 import H1Transport

            self._transport = H1Transport()
        return self._transport


def _from_file(path: Path) -> PriceTable | None:
    try:
        data = msgspec.json.decode(path.read_bytes())
        table = PriceTable.from_models_dev(data) if isinstance(data, dict) else None
    except (OSError, msgspec.DecodeError, ValueError, TypeError):
        return None
    return table if table is not None and len(table) > 0 else None
