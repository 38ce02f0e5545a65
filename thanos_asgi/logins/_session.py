"""One login as a provider instance uses it: the cached token, refreshed before it expires.

`access_token()` is the hot path: a dict lookup and a clock read while the token is fresh.
When it is due (within `margin` seconds of expiry) one refresh runs under an asyncio.Lock,
so 50 requests arriving with an expired token cause exactly one refresh; the rest wait for
it. A transient failure (connect error, timeout, 429, 5xx) is retried after `retry_delays`;
a refused refresh (revoked, `invalid_grant`) deletes the stored login and the session
answers "login required" (503, naming the exact command) until someone logs in again. While
logged out, the store is re-read at most every `recheck` seconds, so a login made by the CLI
in another process is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from thanos_asgi.exceptions import ProviderUnavailable, ThanosError, UpstreamConnectError
from thanos_asgi.logins._store import Token, TokenStore
from thanos_asgi.logins._wire import Transient, scrub_secrets
from thanos_asgi.sanitize import scrub

log = logging.getLogger("thanos_asgi.logins")


class LoginRequired(ProviderUnavailable):
    """503: nobody is logged in, or the login was revoked; the message names the command."""

    code = "login_required"


class LoginFailed(ThanosError):
    """A login attempt ended without a token (denied, expired, wrong code or state)."""

    status = 400
    type = "login_error"
    code = "login_failed"


class Revoked(Exception):
    """The server refused to renew the login: only a new login helps."""

    def __init__(self, reason: str) -> None:
        super().__init__(scrub_secrets(reason))
        self.reason = scrub_secrets(reason)


class Refresher(Protocol):
    async def refresh(self, token: Token) -> Token:
        """A fresh token from `token`; raises Revoked or Transient."""
        ...

    async def aclose(self) -> None: ...


class Session:
    def __init__(
        self,
        name: str,
        store: TokenStore | Callable[[], TokenStore],
        refresher: Refresher,
        *,
        clock: Callable[[], float] = time.time,
        margin: float = 300.0,
        retry_delays: Sequence[float] = (0.5, 2.0),
        recheck: float = 5.0,
        instance: str | None = None,
    ) -> None:
        self.name = name  # the login's name: "copilot" or "anthropic"
        self.instance = instance  # the provider instance it is for, named in `command`
        self._store = store
        self.refresher = refresher
        self.clock = clock
        self.margin = margin
        self.retry_delays = tuple(retry_delays)
        self.recheck = recheck
        self.refreshes = 0
        self.flow: str | None = None  # state of a login started over HTTP, for status
        self.pending: dict[str, Any] = {}  # logins started over HTTP, by state, not yet finished
        self._token: Token | None = None
        self._checked_at = float("-inf")
        self._why = "not logged in"
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def store(self) -> TokenStore:
        if callable(self._store):
            self._store = self._store()  # chosen on first use: probing keyrings costs
        return self._store

    @property
    def command(self) -> str:
        return f"thanos auth login {self.instance or self.name}"

    # -- the hot path ----------------------------------------------------------------------

    def current(self) -> Token | None:
        """The login's token (possibly due for refresh), or None while logged out."""
        if self._token is None:
            now = time.monotonic()
            if now - self._checked_at >= self.recheck:
                self._checked_at = now
                self._token = self.store.load(self.name)
        return self._token

    def reason(self) -> str | None:
        """Why requests cannot be sent now (a login is needed), or None."""
        if self.current() is not None:
            return None
        return f"login required ({self._why}): run `{self.command}`"

    def due(self, token: Token) -> bool:
        if not token.access_token:
            return True
        return token.expires_at is not None and self.clock() >= token.expires_at - self.margin

    async def access_token(self) -> Token:
        """A token that is not about to expire, refreshing it first if needed."""
        token = self._required()
        if not self.due(token):
            return token
        async with self._lock:
            token = self._required()
            if not self.due(token):
                return token  # another request refreshed it while this one waited
            stored = await asyncio.to_thread(self.store.load, self.name)
            if stored is None:
                self._logged_out("logged out")
                raise LoginRequired(self._message())
            if stored.access_token != token.access_token and not self.due(stored):
                self._token = stored  # renewed elsewhere (another process, the CLI)
                return stored
            return await self._refresh(stored)

    def _required(self) -> Token:
        token = self.current()
        if token is None:
            raise LoginRequired(self._message())
        return token

    def _message(self) -> str:
        return self.reason() or f"login required: run `{self.command}`"

    async def _refresh(self, token: Token) -> Token:
        for delay in (*self.retry_delays, None):
            try:
                fresh = await self.refresher.refresh(token)
            except Transient as exc:
                if delay is None:
                    raise UpstreamConnectError(
                        f"could not renew the {self.name} login: {exc.reason}"
                    ) from None
                log.warning("%s: renewing the login failed (%s); retrying", self.name, exc.reason)
                await asyncio.sleep(delay)
            except Revoked as exc:
                log.warning("%s: the login was refused (%s); login required", self.name, exc)
                await asyncio.to_thread(self.store.delete, self.name)
                self._logged_out(f"the login was revoked or expired: {exc.reason}")
                raise LoginRequired(self._message()) from None
            else:
                return await self._renewed(fresh)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _renewed(self, token: Token) -> Token:
        self.refreshes += 1
        await asyncio.to_thread(self.store.save, self.name, token)
        self._token = token
        left = "" if token.expires_at is None else f" for {token.expires_at - self.clock():.0f} s"
        log.info("%s: login renewed%s", self.name, left)
        return token

    def _logged_out(self, why: str) -> None:
        self._token = None
        self._why = why
        self._checked_at = time.monotonic()

    # -- logins and logouts ----------------------------------------------------------------

    async def save(self, token: Token) -> None:
        """Keep a token from a completed login; requests may use it at once."""
        await asyncio.to_thread(self.store.save, self.name, token)
        self._token = token
        self.flow = None

    async def logout(self) -> None:
        await asyncio.to_thread(self.store.delete, self.name)
        self._logged_out("logged out")

    def expire(self) -> None:
        """The provider refused the access token: renew it before the next request."""
        if self._token is not None:
            self._token = replace(self._token, expires_at=0.0)

    def reload(self) -> None:
        """Read the store again on next use (a login was made by someone else)."""
        self._token = None
        self._checked_at = float("-inf")

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background login task alive until it ends or the session closes; one at a
        time (starting a login again abandons the previous attempt)."""
        for old in self._tasks:
            old.cancel()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reporting -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Logged in or not, expiry, masked identity: never a token."""
        token = self.current()
        state: dict[str, Any] = {
            "logged_in": token is not None,
            "expires_at": None if token is None else token.expires_at,
            "identity": None if token is None else token.identity,
            "store": self.store.kind,
        }
        if token is None:
            state["login_required"] = self.reason()
        if self.flow:
            state["login_flow"] = self.flow
        return state

    def scrub(self, text: str) -> str:
        token = self._token
        if token is not None:
            text = scrub(text, (token.access_token, token.refresh_token))
        return scrub_secrets(text)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.refresher.aclose()
