"""Reset times as providers announce them: pure parsing, examples and properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from thanos_asgi.providers.resets import (
    duration_seconds,
    gemini_retry_delay,
    http_retry_after,
    reset_after,
    rfc3339_after,
)

NOW = 1_800_000_000.0


def test_examples() -> None:
    assert duration_seconds("6m0s") == 360
    assert duration_seconds("1s") == 1
    assert duration_seconds("20ms") == 0.02
    assert duration_seconds("1h2m3.5s") == 3723.5
    assert duration_seconds("30") == 30
    for bad in ("", "s", "6x", "1s2", "-1s", "nan", "inf", "1" * 100):
        assert duration_seconds(bad) is None, bad
    assert http_retry_after("30", NOW) == 30
    moment = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=90)
    assert http_retry_after(format_datetime(moment, usegmt=True), NOW) == 90
    assert http_retry_after("yesterday", NOW) is None
    assert rfc3339_after(moment.isoformat().replace("+00:00", "Z"), NOW) == 90
    assert rfc3339_after("2026-01-01T00:00:00", NOW) is None  # no zone: not RFC 3339
    body = {
        "error": {
            "code": 429,
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"},
            ],
        }
    }
    assert gemini_retry_delay(json.dumps(body).encode()) == 30
    assert gemini_retry_delay(json.dumps([body]).encode()) == 30
    assert gemini_retry_delay(b'{"retryDelay": ') is None


def test_reset_after_prefers_retry_after_then_the_longest_reset() -> None:
    assert reset_after({"retry-after-ms": "1500", "retry-after": "9"}, b"", NOW) == 1.5
    assert reset_after({"retry-after": "9", "x-ratelimit-reset-tokens": "1m"}, b"", NOW) == 9
    headers = {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"}
    assert reset_after(headers, b"", NOW) == 360
    later = datetime.fromtimestamp(NOW + 42, UTC).isoformat()
    assert reset_after({"anthropic-ratelimit-requests-reset": later}, b"", NOW) == 42
    assert reset_after({}, b"", NOW) is None
    assert reset_after({"retry-after": "soon"}, b"", NOW) is None


@given(st.text(max_size=200), st.binary(max_size=300))
def test_any_input_gives_none_or_a_finite_nonnegative_number(text: str, body: bytes) -> None:
    headers = {
        "retry-after": text,
        "retry-after-ms": text,
        "x-ratelimit-reset-requests": text,
        "anthropic-ratelimit-tokens-reset": text,
    }
    for value in (
        duration_seconds(text),
        http_retry_after(text, NOW),
        rfc3339_after(text, NOW),
        gemini_retry_delay(body),
        reset_after(headers, body, NOW),
    ):
        assert value is None or (value >= 0 and value == value and value != float("inf"))


@given(
    st.integers(0, 99),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
def test_durations_add_up(hours: int, minutes: int, seconds: int, millis: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    result = duration_seconds(text)
    assert result is not None and abs(result - expected) < 1e-6


@given(st.integers(0, 10**9))
def test_retry_after_seconds_round_trip(seconds: int) -> None:
    assert http_retry_after(str(seconds), NOW) == seconds
