"""The Redis state backend: one key space shared by several gateway processes.

Each counter operation is one Lua script (`_scripts.py`, run with EVALSHA and re-sent with
EVAL on NOSCRIPT), so concurrent processes cannot overspend; windows use Redis `TIME`.
Sockets time out fast (2 s to connect, 2 s per command) and the client never retries: a
script that timed out may have run, and running it again could count twice. Commands asked
for in one turn of the event loop go to Redis in one write (`_pipe.py`). The pool is small
(16): Redis runs one command at a time anyway, and a burst of cold connections costs more
than it gains; batches beyond it wait up to `pool_timeout` for a connection.

When the store cannot be used (connection refused, timeout, wrong credentials, read-only
replica, out of memory) every operation raises `StateUnavailable` (503) -- unless
`fail_open=True`, which means "serve traffic unmetered rather than refuse it": `window_take`
allows (used=0, reset_after=0.0), `reserve` returns True, `spent` reads (0.0, 0.0),
`get_json` reads None, and the writes `window_adjust`, `settle`, `settle_many` and `set_json`
are dropped,
each with a WARNING. Allowing operations warn once when the store becomes unreachable and
log INFO when it is back. Nothing ever falls back to per-process memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from thanos_asgi.governance.state import _scripts
from thanos_asgi.governance.state._base import (
    GRACE,
    SpendLost,
    SpendSettling,
    StateUnavailable,
    WindowResult,
    check_window,
    from_micro,
    nonnegative_micro,
)
from thanos_asgi.governance.state._pipe import Orphan, Pipe

log = logging.getLogger("thanos_asgi.governance.state")

_T = TypeVar("_T")
_UNREACHABLE = (rex.ConnectionError, rex.TimeoutError, OSError)
_REFUSING = (rex.ReadOnlyError, rex.OutOfMemoryError)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class RedisBackend:
    """State in Redis at `url`; keys are `<key_prefix><kind>:<key>`."""

    def __init__(
        self,
        url: str,
        *,
        fail_open: bool = False,
        key_prefix: str = "thanos:",
        max_connections: int = 16,
        connect_timeout: float = 2.0,
        op_timeout: float = 2.0,
        pool_timeout: float = 5.0,
    ) -> None:
        self._where, self._password = _describe(url)
        self._fail_open = fail_open
        self._prefix = key_prefix
        self._down = False
        pool = aioredis.ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,  # `_command` bounds each command, reply included
            retry=Retry(NoBackoff(), 0),
        )
        self._pipe = Pipe(pool, max_connections, op_timeout, pool_timeout)
        self._client = aioredis.Redis.from_pool(pool)  # (owns the pool: closes it)

    async def window_take(self, key: str, amount: int, limit: int, window: float) -> WindowResult:
        check_window(window)
        call = self._eval(_TAKE, [self._key("window", key)], amount, limit, _micros(window))
        reply = await self._guard(call, None, "window_take")
        if reply is None:
            return WindowResult(True, 0, limit, 0.0)
        allowed, used, reset = reply
        return WindowResult(bool(allowed), int(used), limit, int(reset) / 1_000_000)

    async def window_adjust(self, key: str, delta: int, window: float) -> None:
        check_window(window)
        call = self._eval(_ADJUST, [self._key("window", key)], delta, _micros(window))
        await self._guard(call, None, "window_adjust", drops=True)

    shared = True

    async def reserve(
        self,
        key: str,
        amount: float,
        limit: float,
        ttl: float,
        *,
        marker: str | None = None,
        owner: str | None = None,
        landed: Callable[[bool], object] | None = None,
    ) -> bool:
        keys = [self._key("budget", key)]
        if marker is not None:
            keys += [self._key("budget", marker), self._key("budget", f"{marker}:grace")]
        args: list[int | str] = [nonnegative_micro(amount), nonnegative_micro(limit), _millis(ttl)]
        if owner is not None:
            args.append(owner)
        orphan = None if landed is None else lambda reply: landed(reply == 1)
        call = self._eval(_RESERVE, keys, *args, orphan=orphan)
        reply = await self._guard(call, 1, "reserve")
        if reply == 2:
            raise SpendLost(marker)
        if isinstance(reply, list):
            raise SpendSettling(int(reply[1]) / 1000)
        return bool(reply)

    async def take_and_reserve(
        self,
        window: tuple[str, int, int, float],
        budgets: Sequence[tuple[str, float]],
        amount: float,
        ttl: float,
        *,
        marker: str,
        owner: str,
        landed: Callable[[WindowResult, bool | None], object] | None = None,
    ) -> tuple[WindowResult, bool | None]:
        key, tokens, limit, width = window
        check_window(width)
        keys = [self._key("window", key), self._key("budget", marker)]
        keys += [self._key("budget", f"{marker}:grace")]
        keys += [self._key("budget", budget) for budget, _ in budgets]
        args: list[int | str] = [tokens, limit, _micros(width), nonnegative_micro(amount)]
        args += [_millis(ttl), owner]
        args += [nonnegative_micro(most) for _, most in budgets]
        orphan = None if landed is None else lambda reply: landed(*_taken(reply, limit))
        call = self._eval(_TAKE_AND_RESERVE, keys, *args, orphan=orphan)
        reply = await self._guard(call, None, "reserve")
        if reply is None:  # fail_open: as window_take and reserve
            return WindowResult(True, 0, limit, 0.0), True
        return _taken(reply, limit)

    async def settle(
        self, key: str, reserved: float, actual: float, ttl: float, *, owner: str | None = None
    ) -> None:
        args: list[int | str] = [
            nonnegative_micro(reserved),
            nonnegative_micro(actual),
            _millis(ttl),
        ]
        if owner is not None:
            args.append(owner)
        call = self._eval(_SETTLE, [self._key("budget", key)], *args)
        await self._guard(call, None, "settle", drops=True)

    async def settle_many(
        self,
        adjusts: Sequence[tuple[str, int]],
        window: float,
        settles: Sequence[tuple[str, float, float]],
        ttl: float,
        *,
        owner: str | None = None,
    ) -> None:
        check_window(window)
        keys = [self._key("window", key) for key, _ in adjusts]
        keys += [self._key("budget", key) for key, _, _ in settles]
        args: list[int | str] = [len(adjusts), _micros(window), _millis(ttl), owner or ""]
        args += [delta for _, delta in adjusts]
        for _, reserved, actual in settles:
            args += [nonnegative_micro(reserved), nonnegative_micro(actual)]
        call = self._eval(_SETTLE_MANY, keys, *args)
        await self._guard(call, None, "settle_many", drops=True)

    async def hold(self, key: str, owner: str, amount: float, ttl: float) -> None:
        args: list[int | str] = [owner, nonnegative_micro(amount), _millis(ttl)]
        await self._guard(self._eval(_HOLD, [self._key("budget", key)], *args), None, "hold")

    async def restore(self, marker: str, spent: Mapping[str, float], ttl: float) -> bool:
        keys = [self._key("budget", name) for name in (marker, f"{marker}:grace", *spent)]
        args: list[int | str] = [_millis(ttl), secrets.token_hex(8), _millis(GRACE)]
        args += [nonnegative_micro(amount) for amount in spent.values()]
        return bool(await self._guard(self._eval(_RESTORE, keys, *args), 0, "restore"))

    async def generation(self, marker: str) -> str | None:
        call = self._pipe.command("GET", self._key("budget", marker))
        found = await self._guard(call, None, "marker")
        return None if found is None else str(found)

    async def spent(self, key: str) -> tuple[float, float]:
        call = self._pipe.command("HMGET", self._key("budget", key), "s", "r")
        unknown: list[bytes | str | None] = [None, None]
        spent, reserved = await self._guard(call, unknown, "spent")
        return from_micro(int(spent or 0)), from_micro(int(reserved or 0))

    async def get_json(self, key: str) -> Any | None:
        call = self._pipe.command("GET", self._key("json", key))
        data = await self._guard(call, None, "get_json")
        return None if data is None else _decode(data)

    async def set_json(self, key: str, value: Any, ttl: float | None) -> None:
        expiry = () if ttl is None else ("PX", _millis(ttl))
        call = self._pipe.command("SET", self._key("json", key), _encode(value), *expiry)
        await self._guard(call, None, "set_json", drops=True)

    async def aclose(self) -> None:
        await self._pipe.aclose()
        await self._client.aclose()

    async def _eval(
        self,
        script: tuple[str, str],
        keys: list[str],
        *args: int | str,
        orphan: Orphan | None = None,
    ) -> Any:
        """Run `script` (SHA-1, source): EVALSHA, or EVAL when Redis does not know it yet (a
        new, restarted or flushed server), which also makes it known."""
        sha, source = script
        try:
            return await self._pipe.command("EVALSHA", sha, len(keys), *keys, *args, orphan=orphan)
        except rex.NoScriptError:
            return await self._pipe.command("EVAL", source, len(keys), *keys, *args, orphan=orphan)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"

    async def _guard(
        self, call: Awaitable[_T], fallback: _T, op: str, *, drops: bool = False
    ) -> _T:
        """Await `call`; map an unusable store to StateUnavailable, or to `fallback` if open."""
        try:
            result = await call
        except (*_UNREACHABLE, *_REFUSING) as exc:
            error = self._unavailable(exc)
            if not self._fail_open:
                raise error from None
            self._note_outage(op, error, drops)
            return fallback
        if self._down:
            self._down = False
            log.info("the shared state store %s is reachable again", self._where)
        return result

    def _unavailable(self, exc: BaseException) -> StateUnavailable:
        reason = str(exc) or type(exc).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        state = _state(exc)
        return StateUnavailable(f"the shared state store ({self._where}) {state}: {reason}")

    def _note_outage(self, op: str, error: StateUnavailable, drops: bool) -> None:
        if drops:
            log.warning("%s; fail_open: %s dropped", error.message, op)
        elif not self._down:
            log.warning(
                "%s; fail_open: allowing requests unmetered until it is back", error.message
            )
        self._down = True


def _state(exc: BaseException) -> str:
    if isinstance(exc, (rex.AuthenticationError, rex.AuthorizationError)):
        return "refuses the credentials"
    return "refuses writes" if isinstance(exc, _REFUSING) else "is unreachable"


def _describe(url: str) -> tuple[str, str]:
    """(the URL without credentials or query, the password to keep out of messages)."""
    parts = urlsplit(url)
    password = unquote(parts.password or "")
    if parts.scheme == "unix":
        return f"unix://{parts.path}", password
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}", password


def _script(source: str) -> tuple[str, str]:
    return hashlib.sha1(source.encode()).hexdigest(), source


_TAKE = _script(_scripts.WINDOW_TAKE)
_ADJUST = _script(_scripts.WINDOW_ADJUST)
_RESERVE = _script(_scripts.RESERVE)
_SETTLE = _script(_scripts.SETTLE)
_SETTLE_MANY = _script(_scripts.SETTLE_MANY)
_TAKE_AND_RESERVE = _script(_scripts.TAKE_AND_RESERVE)
_RESTORE = _script(_scripts.RESTORE)
_HOLD = _script(_scripts.HOLD)


def _taken(reply: Any, limit: int) -> tuple[WindowResult, bool | None]:
    """TAKE_AND_RESERVE's reply as `take_and_reserve` returns it."""
    allowed, used, reset, reserved = reply
    taken = WindowResult(bool(allowed), int(used), limit, int(reset) / 1_000_000)
    return taken, None if not allowed or reserved == 2 else bool(reserved)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
