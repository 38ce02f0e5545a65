"""Per-credential state of pooled instances: cooling, disabled, rotation position, use.

Cooldowns and the round-robin position live in the state backend (`[state]`): in memory for
one process, in Redis shared by every process on it (keys `credential:<instance>:<id>` and
`credential-rr:<instance>` under the backend's prefix). A reload keeps the backend, so
cooldowns of credentials whose ids still exist carry over. Disabled credentials (the
provider refused the key: 401/403) stay disabled in this gateway only, until a reload.
A local mirror of what was last read answers `/health/ready` without a round trip.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from thanos_asgi.governance.state import MemoryBackend, StateBackend

__all__ = ["DEFAULT_COOLDOWN", "MAX_COOLDOWN", "CredentialBook", "CredentialStatus"]

DEFAULT_COOLDOWN = 60.0  # seconds, when a 429 or quota answer announced no reset
MAX_COOLDOWN = 86_400.0  # no announcement cools a key for longer than a day
_RR_WINDOW = 86_400.0
_RR_LIMIT = 2**62
MAX_ERROR = 200


@dataclass(frozen=True, slots=True)
class CredentialStatus:
    id: str
    state: str  # ok | cooling | disabled
    cooling_until: float | None = None  # Unix time
    last_error: str | None = None


class CredentialBook:
    def __init__(self, state: StateBackend) -> None:
        self.state = state
        self.local = isinstance(state, MemoryBackend)
        self._cooling: dict[tuple[str, str], tuple[float, str]] = {}  # mirror: (until, error)
        self._disabled: dict[tuple[str, str], str] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._used: dict[tuple[str, str], int] = {}

    async def cooling(self, instance: str, ids: list[str]) -> dict[str, float]:
        """The ids among `ids` cooling now, with when each cools off (Unix time)."""
        if self.local:  # no round trips to overlap: tasks would only cost time
            records = [await self.state.get_json(_key(instance, i)) for i in ids]
        else:
            records = await asyncio.gather(*(self.state.get_json(_key(instance, i)) for i in ids))
        now = time.time()
        found: dict[str, float] = {}
        for credential, record in zip(ids, records, strict=True):
            until, error = _parse(record)
            if until > now:
                found[credential] = until
                self._cooling[(instance, credential)] = (until, error)
                self._errors[(instance, credential)] = error
            else:
                self._cooling.pop((instance, credential), None)
        return found

    async def cool(self, instance: str, credential: str, seconds: float, error: str) -> float:
        """Cool `credential` for `seconds` (default and cap applied); returns until when."""
        seconds = min(max(seconds, 0.001), MAX_COOLDOWN)
        until = time.time() + seconds
        error = error[:MAX_ERROR]
        self._cooling[(instance, credential)] = (until, error)
        self._errors[(instance, credential)] = error
        await self.state.set_json(
            _key(instance, credential), {"until": until, "error": error}, seconds
        )
        return until

    def disable(self, instance: str, credential: str, error: str) -> None:
        self._disabled[(instance, credential)] = self._errors[(instance, credential)] = error[
            :MAX_ERROR
        ]

    def disabled(self, instance: str, credential: str) -> bool:
        return (instance, credential) in self._disabled

    async def position(self, instance: str) -> int:
        """The next round-robin position of `instance` (shared across processes)."""
        taken = await self.state.window_take(f"credential-rr:{instance}", 1, _RR_LIMIT, _RR_WINDOW)
        return taken.used - 1

    def use(self, instance: str, credential: str) -> None:
        self._used[(instance, credential)] = self._used.get((instance, credential), 0) + 1

    def used(self, instance: str, credential: str) -> int:
        return self._used.get((instance, credential), 0)

    def status(self, instance: str, credential: str) -> CredentialStatus:
        """What this process last saw of `credential` (never its key)."""
        key = (instance, credential)
        error = self._errors.get(key)
        if key in self._disabled:
            return CredentialStatus(credential, "disabled", None, error)
        until = self._cooling.get(key, (0.0, ""))[0]
        if until > time.time():
            return CredentialStatus(credential, "cooling", until, error)
        return CredentialStatus(credential, "ok", None, error)


def _key(instance: str, credential: str) -> str:
    return f"credential:{instance}:{credential}"


def _parse(record: object) -> tuple[float, str]:
    if not isinstance(record, dict):
        return 0.0, ""
    until, error = record.get("until"), record.get("error")
    if not isinstance(until, int | float) or isinstance(until, bool):
        return 0.0, ""
    return float(until), error if isinstance(error, str) else ""
