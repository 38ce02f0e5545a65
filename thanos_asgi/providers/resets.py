"""When a provider says a rate limit or quota resets: pure parsing of its headers and body.

    Retry-After: 30 | Retry-After: Wed, 21 Oct 2026 07:28:00 GMT | retry-after-ms: 1500
    x-ratelimit-reset-requests: 6m0s | x-ratelimit-reset-tokens: 20ms      (OpenAI, Groq)
    anthropic-ratelimit-requests-reset: 2026-12-06T02:00:00Z                (RFC 3339)
    {"error": {"details": [{"@type": ".../google.rpc.RetryInfo", "retryDelay": "30s"}]}}

Every function returns seconds from `now` (never negative), or None when nothing usable was
announced; garbage of any size gives None, never an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec

from thanos_asgi.sanitize import decode as bounded_decode

__all__ = [
    "duration_seconds",
    "gemini_retry_delay",
    "http_retry_after",
    "reset_after",
    "rfc3339_after",
]

MAX_TEXT = 64  # longer header values are not parsed
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


def _finite(value: float) -> float | None:
    return max(value, 0.0) if math.isfinite(value) else None


def duration_seconds(text: str) -> float | None:
    """Go-style durations (`"6m0s"`, `"1s"`, `"20ms"`, `"1h2m3.5s"`) or bare seconds (`"30"`)."""
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        return None
    try:
        return _finite(float(text))
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match[1]) * _UNITS[match[2]]
        position = match.end()
    return _finite(total) if position == len(text) and position else None


def http_retry_after(value: str, now: float) -> float | None:
    """`Retry-After`: delta seconds or an HTTP date."""
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        return None
    try:
        return _finite(float(value))
    except ValueError:
        pass
    try:
        return _finite(parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def rfc3339_after(value: str, now: float) -> float | None:
    """Seconds until an RFC 3339 time (`2026-12-06T02:00:00Z`); None if not one."""
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    try:
        return _finite(moment.timestamp() - now)
    except (OverflowError, ValueError):
        return None


def gemini_retry_delay(body: bytes) -> float | None:
    """`RetryInfo.retryDelay` (`"30s"`) from a Google error body."""
    if not body or b"retryDelay" not in body:
        return None
    try:
        data = bounded_decode(body)
    except (msgspec.DecodeError, ValueError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    details: Any = error.get("details") if isinstance(error, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):  # a streamed error
        inner = data[0].get("error")
        details = inner.get("details") if isinstance(inner, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str):
            return duration_seconds(delay)
    return None


def reset_after(headers: Mapping[str, str], body: bytes, now: float) -> float | None:
    """The reset a provider announced, in seconds: the first of `retry-after-ms`,
    `retry-after`, the longest `x-ratelimit-reset-*`, the latest `anthropic-ratelimit-*-reset`,
    Gemini's `RetryInfo`; None when it announced none."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            parsed = _finite(float(value[:MAX_TEXT]) / 1000)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed
    value = headers.get("retry-after")
    if value:
        parsed = http_retry_after(value, now)
        if parsed is not None:
            return parsed
    found = [duration_seconds(headers.get(name, "")) for name in _RESET_HEADERS]
    known = [seconds for seconds in found if seconds is not None]
    if known:
        return max(known)
    anthropic = [
        rfc3339_after(headers.get(f"anthropic-ratelimit-{kind}-reset", ""), now)
        for kind in ("requests", "tokens", "input-tokens", "output-tokens")
    ]
    known = [seconds for seconds in anthropic if seconds is not None]
    if known:
        return max(known)
    return gemini_retry_delay(body)
