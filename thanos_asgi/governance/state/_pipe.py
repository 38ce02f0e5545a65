"""Commands to Redis, sent together: every command asked for in one turn of the event loop
leaves in one write on one pooled connection, and its replies are read back in order.

A gateway under load asks for a requests-per-minute take and a tokens-and-budget reservation
per request, from many requests at once. Sent one by one, each command took a connection from
the pool, a timeout of its own and a send(2): ~100 us of the gateway's CPU a command, more than
the pass-through spends on a whole request. Together, those costs are paid once per turn.

Each batch runs as a task of its own, with one deadline (`op_timeout`) for its write and all
its replies. A caller that is cancelled stops waiting; its batch goes on, so the connection
stays in step (the reply is read and dropped). A batch that fails (the connection broke, no
reply in time) fails every command in it with the same error, and redis-py drops that
connection. An error reply (NOSCRIPT, READONLY, ...) fails only its own command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex

try:  # (the `redis` extra installs it)
    from hiredis import pack_command
except ImportError:  # pragma: no cover - without it, redis-py packs the commands
    pack_command = None  # type: ignore[assignment]

log = logging.getLogger("thanos_asgi.governance.state")
BATCH = 256  # commands in one write, at most (a busier turn sends several batches)
Orphan = Callable[[Any], object]  # given the reply of a command whose caller was cancelled
_Command = tuple[tuple[bytes | int | str, ...], asyncio.Future[Any], Orphan | None]


class Pipe:
    def __init__(
        self,
        pool: aioredis.ConnectionPool,
        max_connections: int,
        op_timeout: float,
        pool_timeout: float,
    ) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(max_connections)  # batches that may hold a connection
        self._op_timeout = op_timeout
        self._pool_timeout = pool_timeout
        self._queued: list[_Command] = []
        self._batches: set[asyncio.Task[None]] = set()

    async def command(self, *args: bytes | int | str, orphan: Orphan | None = None) -> Any:
        """The reply to one command; the command's error reply raised as redis-py raises it.
        `orphan` gets the reply if the caller is cancelled after the command was sent (what
        it did in the store is done, and no one else will hear of it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        queued = self._queued
        queued.append((args, future, orphan))
        if len(queued) == 1:
            loop.call_soon(self._send)  # once this turn's commands are all queued
        try:
            return await future
        except asyncio.CancelledError:
            if orphan is not None and not future.cancelled() and future.exception() is None:
                _hand(orphan, future.result())  # (the reply came, then the cancellation)
            raise

    def _send(self) -> None:
        queued = [command for command in self._queued if not command[1].done()]  # (not sent)
        self._queued = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queued), BATCH):
            task = loop.create_task(self._run(queued[start : start + BATCH]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run(self, batch: list[_Command]) -> None:
        try:
            replies = await self._exchange([args for args, _, _ in batch])
        except asyncio.CancelledError:
            _fail(batch, rex.ConnectionError("the connection to Redis was closed"))
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        for (_, future, orphan), reply in zip(batch, replies, strict=True):
            if future.cancelled():  # (its caller stopped waiting)
                if orphan is not None and not isinstance(reply, rex.ResponseError):
                    _hand(orphan, reply)
                continue
            if isinstance(reply, rex.ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _exchange(self, commands: list[tuple[bytes | int | str, ...]]) -> list[Any]:
        """Each command's reply (an error reply as its exception), in order, on one
        connection, within `op_timeout`; waits up to `pool_timeout` for a connection."""
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise rex.ConnectionError("No connection available.") from None
        else:
            await slots.acquire()  # (free: returns at once)
        try:
            pool = self._pool
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                async with asyncio.timeout(self._op_timeout):
                    packed = packed_commands(connection, commands)
                    await connection.send_packed_command(packed, check_health=False)
                    return [await _reply(connection) for _ in commands]
            except TimeoutError:
                raise rex.TimeoutError(f"no reply within {self._op_timeout:g} s") from None
            finally:
                await pool.release(connection)
        finally:
            slots.release()

    async def aclose(self) -> None:
        """Stop the batches still waiting and those not sent yet (their callers get
        ConnectionError)."""
        _fail(self._queued, rex.ConnectionError("the connection to Redis was closed"))
        self._queued = []
        for task in list(self._batches):
            task.cancel()
        if self._batches:
            await asyncio.wait(list(self._batches))


def packed_commands(
    connection: aioredis.connection.AbstractConnection,
    commands: list[tuple[bytes | int | str, ...]],
) -> list[bytes]:
    """`commands` in Redis's protocol, as `connection.pack_commands` writes them. hiredis
    packs each command in one C call; redis-py, even with hiredis, first encodes each
    argument in Python (~7 us a command of 13 arguments here, against ~1.3). Its text is
    UTF-8, strict: another encoding in the Redis URL goes through redis-py."""
    encoder = connection.encoder
    if pack_command is None or encoder.encoding != "utf-8" or encoder.encoding_errors != "strict":
        return connection.pack_commands(commands)
    return [b"".join([pack_command(command) for command in commands])]  # type: ignore[arg-type]


async def _reply(connection: aioredis.connection.AbstractConnection) -> Any:
    try:
        return await connection.read_response()
    except rex.ResponseError as exc:  # an error reply: the connection is still in step
        return exc


def _hand(orphan: Orphan, reply: Any) -> None:
    try:
        orphan(reply)
    except Exception:  # (it must not stop the other replies of its batch)
        log.exception("a cancelled command's reply could not be handled")


def _fail(batch: list[_Command], exc: BaseException) -> None:
    for _, future, _ in batch:
        if not future.done():
            future.set_exception(exc)
