"""`[ledger] retention_days`, for either ledger: delete older rows at open, then at most once
per `PURGE_EVERY` seconds, as writes come."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("thanos_asgi.governance.ledger")
PURGE_EVERY = 3600.0  # seconds between deletions of rows past `retention_days`


class Retention:
    def __init__(self, days: float | None) -> None:
        self.days = days
        self._next = 0.0

    def run(
        self,
        purge: Callable[[float], int],
        errors: type[Exception],
        describe: Callable[[Exception], str] = str,
    ) -> None:
        """`purge(cutoff)` when due; a failure (`errors`) is logged and retried later."""
        if self.days is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + PURGE_EVERY
        try:
            deleted = purge(time.time() - self.days * 86400.0)
        except errors as exc:
            log.warning("usage ledger: old rows not deleted (will retry): %s", describe(exc))
            return
        if deleted:
            log.info("usage ledger: %d rows older than %g days deleted", deleted, self.days)
