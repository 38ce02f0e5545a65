"""What finished requests leave behind, written off the request path: one worker task takes
the token-window corrections and budget settlements queued since it last ran, up to `BATCH` of
each, and writes them with one `settle_many` (one round trip to Redis, however many requests
finished meanwhile): a task or a round trip per request would cost more than most settlements
do.

With a ledger every replica writes (`flush`: its import of this process's queued rows), a batch's
ledger rows are in it before its holds go: a rebuild of the month (the shared state lost it) then
finds each finished request either in the ledger or among the holds put back, never in neither.
(One that settles between another replica's rebuild and its own watcher's next look is counted
twice until the month ends: the safe side.) A ledger that refuses the rows, or does not answer
within `ROWS_WAIT` seconds, does not hold settlements up: they go on without it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.governance._holds import Holds
from thanos_asgi.governance._spend import MONTH_TTL
from thanos_asgi.governance.state import StateBackend
from thanos_asgi.governance.windows import MINUTE

log = logging.getLogger("thanos_asgi.governance.accounting")
BATCH = 128  # window corrections and settlements written in one step, at most
ROWS_WAIT = 5.0  # seconds a batch waits for its ledger rows before it settles anyway
MAX_QUEUED = 100_000  # of each kind waiting for the store (a store far behind: newer dropped)


class Settlements:
    def __init__(
        self,
        state: StateBackend,
        holds: Holds,
        after: Callable[[], Awaitable[object]],
        flush: Callable[[], bool] | None = None,
    ) -> None:
        self.state = state
        self.holds = holds
        self._after = after  # run after each write that settled a budget
        self._flush = flush  # run before it (in a thread): the finished requests' rows in
        self._adjusts: list[tuple[str, int]] = []  # (tpm key, delta) not written yet
        self._settles: list[tuple[list[str], float, float]] = []  # (keys, reserved, actual)
        self._worker: asyncio.Task[None] | None = None
        self._warned = False  # about dropping, once per backlog

    def tokens(self, key: str, delta: int) -> None:
        """Add `delta` to the tokens window `key`."""
        if len(self._adjusts) >= MAX_QUEUED:  # the store is far behind: a refund is lost
            self._dropped("token-window corrections")  # (the window over-counts, <= 1 min)
            return
        self._adjusts.append((key, delta))
        self._wake()

    def budgets(self, keys: list[str], reserved: float, actual: float) -> None:
        """Replace `reserved` with `actual` in each budget of `keys` (this process's holds)."""
        if len(self._settles) >= MAX_QUEUED:  # the worst case stays reserved: never less
            for key in keys:
                self.holds.remove(key, reserved)
            self._dropped("budget settlements")
            return
        self._settles.append((keys, reserved, actual))
        self._wake()

    def _dropped(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "the state store is behind: %d %s queued, newer ones dropped", MAX_QUEUED, what
            )

    def _wake(self) -> None:
        worker = self._worker
        if worker is None or worker.done():
            loop = worker.get_loop() if worker is not None else None  # (no getpid() on 3.11)
            if loop is None or loop.is_closed():
                loop = asyncio.get_running_loop()
            self._worker = loop.create_task(self._run())

    async def _run(self) -> None:
        while self._adjusts or self._settles:  # what is queued now, then what came meanwhile
            adjusts, self._adjusts = self._adjusts, []
            settles, self._settles = self._settles, []
            for start in range(0, max(len(adjusts), len(settles)), BATCH):
                end = start + BATCH
                await _logged(self._write(adjusts[start:end], settles[start:end]))
        self._warned = False

    async def _write(
        self, adjusts: list[tuple[str, int]], settles: list[tuple[list[str], float, float]]
    ) -> None:
        if settles and self._flush is not None:
            await self._rows_in(self._flush)
        budgets = []
        for keys, reserved, actual in settles:
            for key in keys:
                self.holds.remove(key, reserved)
                budgets.append((key, reserved, actual))
        owner = self.holds.owner
        await self.state.settle_many(adjusts, MINUTE, budgets, MONTH_TTL, owner=owner)
        if settles:
            await self._after()

    @staticmethod
    async def _rows_in(flush: Callable[[], bool]) -> None:
        try:
            if not await asyncio.wait_for(asyncio.to_thread(flush), ROWS_WAIT):
                log.warning("budgets settled before their ledger rows: the ledger refused them")
        except TimeoutError:
            log.warning("budgets settled before their ledger rows: the ledger did not answer")

    async def drain(self) -> None:
        """Wait for the writes under way and queued."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)


async def _logged(work: Awaitable[None]) -> None:
    try:
        await work
    except ThanosError as exc:
        log.error("could not settle usage: %s", exc.message)
    except Exception:  # one bad settlement must not stop the ones queued after it
        log.exception("could not settle usage")
