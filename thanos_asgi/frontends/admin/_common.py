"""What the admin routes share: the caller, query parsing, JSON answers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.frontends.asgi import JSON, Headers, Scope, respond

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange

MAX_TEXT = 256  # longest filter value (a key id, a model name) a query may carry
_encode = msgspec.json.Encoder().encode
NO_STORE: Headers = [(b"cache-control", b"no-store")]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes an admin call: the admin key's id, and how it came (key or session)."""

    key_id: str
    via: Literal["key", "session"]


async def answer(ex: Exchange, body: Any, status: int = 200, headers: Headers = ()) -> None:  # type: ignore[assignment]
    await respond(ex.send, status, _encode(body), [*JSON, *NO_STORE, *headers])


def query(scope: Scope) -> Mapping[str, str]:
    """The query string's parameters, the first value of each."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return {name: values[0] for name, values in parse_qs(raw).items()}


def text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"{name} is longer than {MAX_TEXT} characters", param=name)
    return value


def number(params: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        found = float(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number", param=name) from None
    if not math.isfinite(found) or not low <= found <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}", param=name)
    return found


def integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", param=name)
    return int(value)


def decode(body: bytes, type_: type[Any]) -> Any:
    """`body` as `type_`, a 400 naming the path of what was wrong."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid body: {exc}") from None


def tail(path: str, prefix: str) -> str:
    """The path parameter after `prefix` (`/admin/keys/` + id), bounded."""
    found = path[len(prefix) :]
    if not found or "/" in found or len(found) > MAX_TEXT:
        raise InvalidRequest("invalid path parameter")
    return found
