"""How `RedisBackend` sends its commands: scripts Redis does not know yet, commands that get
no reply in time, and commands cancelled half way must leave every connection usable.

Against the real Redis (database 11 unless THANOS_TEST_SETTLE_REDIS_URL says otherwise,
keys under a prefix of their own) and, for the replies that come late or never, a loopback
server that speaks just enough RESP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from thanos_asgi.governance.state import StateUnavailable, WindowResult
from thanos_asgi.governance.state._pipe import packed_commands
from thanos_asgi.governance.state._redis import RedisBackend, _script

pytestmark = pytest.mark.anyio
REDIS_URL = os.environ.get("THANOS_TEST_SETTLE_REDIS_URL", "redis://127.0.0.1:6379/11")


async def test_a_script_redis_does_not_know_is_sent_whole_once() -> None:
    """EVALSHA answered NOSCRIPT: EVAL runs it (and makes it known); the next call is EVALSHA."""
    prefix = f"thanos-test:{uuid.uuid4().hex}:"
    script = _script(f"return {{'{prefix}', KEYS[1], ARGV[1]}}")  # new to this server
    backend = RedisBackend(REDIS_URL, key_prefix=prefix)
    seen: list[str] = []

    async def listen(ready: asyncio.Event) -> None:
        async with aioredis.Redis.from_url(REDIS_URL) as client, client.monitor() as monitor:
            ready.set()
            while True:
                command = (await monitor.next_command())["command"]
                if prefix in command:
                    seen.append(command.split(" ")[0].upper())

    ready = asyncio.Event()
    task = asyncio.create_task(listen(ready))
    try:
        await ready.wait()
        first = await backend._eval(script, [f"{prefix}k"], 7)
        second = await backend._eval(script, [f"{prefix}k"], 8)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await backend.aclose()
    key = f"{prefix}k".encode()
    assert first == [prefix.encode(), key, b"7"]
    assert second == [prefix.encode(), key, b"8"]
    assert seen == ["EVALSHA", "EVAL", "EVALSHA"]


class LateRedis:
    """Answers each command with its last word, `delay` seconds later (None: never); only the
    connection's set-up is answered at once."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.connections = 0
        self.commands = 0  # answered or not, connection set-up excluded
        self.reads = 0  # times a command arrived with none before it waiting in the buffer
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                fresh = not reader._buffer  # (nothing read ahead: it came in a new write)
                words = await _command(reader)
                if words[0].upper() == b"HELLO":  # as a Redis before 6: RESP2 only
                    writer.write(b"-ERR unknown command 'HELLO'\r\n")
                    continue
                if words[0].upper() in (b"CLIENT", b"SELECT", b"AUTH"):
                    writer.write(b"+OK\r\n")
                    continue
                self.commands += 1
                self.reads += fresh
                if self.delay is None:
                    continue
                await asyncio.sleep(self.delay)
                writer.write(b"$%d\r\n%s\r\n" % (len(words[-1]), words[-1]))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed")
    count = int(line[1:])
    words = []
    for _ in range(count):
        size = int((await reader.readline())[1:])
        words.append((await reader.readexactly(size + 2))[:-2])
    return words


@contextlib.asynccontextmanager
async def late_redis(delay: float | None) -> AsyncIterator[LateRedis]:
    late = LateRedis(delay)
    late.server = await asyncio.start_server(late.serve, "127.0.0.1", 0)
    try:
        yield late
    finally:
        late.server.close()


async def test_a_command_without_a_reply_times_out_as_unavailable() -> None:
    async with late_redis(None) as late:
        closed = RedisBackend(late.url, op_timeout=0.2)
        opened = RedisBackend(late.url, op_timeout=0.2, fail_open=True)
        try:
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match=r"unreachable: no reply within 0.2 s"):
                await closed.generation("marker")
            assert time.monotonic() - started < 1.5
            assert await opened.window_take("k", 1, 5, 60.0) == WindowResult(True, 0, 5, 0.0)
        finally:
            await closed.aclose()
            await opened.aclose()


async def test_a_cancelled_command_leaves_no_reply_for_the_next_one() -> None:
    """The only connection of the pool was waiting for a reply when its command was
    cancelled: the reply is read and dropped, and the next command gets its own reply on
    the same connection."""
    async with late_redis(0.3) as late:
        backend = RedisBackend(late.url, max_connections=1)
        try:
            first = asyncio.create_task(backend.generation("first"))
            await asyncio.sleep(0.1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            await asyncio.sleep(0.4)  # the first reply has come by now
            assert await backend.generation("second") == repr(b"thanos:budget:second")
            assert late.connections == 1
            assert late.commands == 2
        finally:
            await backend.aclose()


async def test_a_command_cancelled_before_its_batch_left_is_not_sent() -> None:
    async with late_redis(0.0) as late:
        backend = RedisBackend(late.url)
        try:
            await backend.generation("warm")  # (connected)
            gone = asyncio.create_task(backend.generation("gone"))
            await asyncio.sleep(0)  # it is queued for the turn's batch
            gone.cancel()
            assert await backend.generation("kept") == repr(b"thanos:budget:kept")
            assert gone.cancelled()
            assert late.commands == 2  # "warm" and "kept"
        finally:
            await backend.aclose()


async def test_commands_of_one_turn_leave_in_one_write_and_each_gets_its_own_reply() -> None:
    async with late_redis(0.0) as late:
        backend = RedisBackend(late.url, max_connections=1)
        try:
            names = [f"m{i}" for i in range(300)]  # more than one batch (_pipe.BATCH)
            found = await asyncio.gather(*(backend.generation(name) for name in names))
            assert found == [repr(f"thanos:budget:{name}".encode()) for name in names]
            assert late.connections == 1
            assert late.reads <= 4  # 300 commands in two writes (TCP may cut one), not 300
        finally:
            await backend.aclose()


async def test_an_error_reply_fails_only_its_own_command() -> None:
    """In one write: a script Redis does not know (NOSCRIPT, then EVAL), a command Redis
    refuses, and plain ones: each caller gets what its own command got."""
    prefix = f"thanos-test:{uuid.uuid4().hex}:"
    script = _script(f"return '{prefix}' .. ARGV[1]")
    backend = RedisBackend(REDIS_URL, key_prefix=prefix, max_connections=1)
    try:
        found = await asyncio.gather(
            backend.generation("none"),
            backend._eval(script, [], "x"),
            backend._pipe.command("INCR", f"{prefix}not-a-number-after-set"),
            backend._pipe.command("HGET", f"{prefix}not-a-number-after-set", "f"),
            backend.spent("none"),
            return_exceptions=True,
        )
        assert found[0] is None
        assert found[1] == f"{prefix}x".encode()
        assert found[2] == 1
        assert isinstance(found[3], redis.exceptions.ResponseError)
        assert "WRONGTYPE" in str(found[3])
        assert found[4] == (0.0, 0.0)
    finally:
        await backend._pipe.command("DEL", f"{prefix}not-a-number-after-set")
        await backend.aclose()


async def test_a_batch_still_waiting_at_close_fails_its_callers() -> None:
    async with late_redis(None) as late:
        backend = RedisBackend(late.url, op_timeout=5.0)
        waiting = asyncio.create_task(backend.generation("never"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await backend.aclose()
        with pytest.raises(StateUnavailable, match="closed"):
            await waiting
        assert time.monotonic() - started < 1.0
        assert late.connections == 1


async def test_a_command_waits_for_a_free_connection_only_up_to_pool_timeout() -> None:
    async with late_redis(None) as late:
        backend = RedisBackend(late.url, max_connections=1, op_timeout=1.0, pool_timeout=0.2)
        try:
            first = asyncio.create_task(backend.generation("first"))
            await asyncio.sleep(0.1)  # it holds the only connection, waiting for a reply
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match="No connection available"):
                await backend.generation("second")
            assert 0.15 < time.monotonic() - started < 0.8
            with pytest.raises(StateUnavailable, match=r"no reply within 1 s"):
                await first
            assert late.connections == 1
        finally:
            await backend.aclose()


_ARGUMENT = st.binary(max_size=40) | st.text(max_size=20) | st.integers(-(2**70), 2**70)


@settings(derandomize=True, max_examples=300)
@given(commands=st.lists(st.lists(_ARGUMENT, min_size=1, max_size=14), min_size=1, max_size=5))
def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(
    commands: list[list[bytes | str | int]],
) -> None:
    """hiredis packs each command in one call; the bytes must be redis-py's own (UTF-8 text,
    integers in decimal, any bytes), whatever the arguments hold."""
    connection = aioredis.ConnectionPool.from_url(REDIS_URL).make_connection()
    tuples = [(b"ECHO", *command) for command in commands]
    assert packed_commands(connection, tuples) == [b"".join(connection.pack_commands(tuples))]


def test_a_url_with_another_encoding_is_packed_by_redis_py() -> None:
    """Text in another encoding than UTF-8 (`?encoding=` in the URL) is redis-py's to pack."""
    url = REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "encoding=latin-1"
    connection = aioredis.ConnectionPool.from_url(url).make_connection()
    command = [(b"SET", "k", "\u00e9t\u00e9")]
    assert b"".join(packed_commands(connection, command)).endswith(b"\r\n$3\r\n\xe9t\xe9\r\n")
