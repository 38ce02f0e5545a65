"""Exceptions to the client's error shape: the one table each front-end uses."""

from __future__ import annotations

import msgspec

from .exceptions import ThanosError

_encode = msgspec.json.Encoder().encode


class _OpenAIError(msgspec.Struct):
    message: str
    type: str
    code: str | None
    param: str | None


class _OpenAIBody(msgspec.Struct):
    error: _OpenAIError


def openai_error(exc: ThanosError) -> bytes:
    """`{"error": {"message", "type", "code", "param"}}`, as OpenAI sends it."""
    return _encode(_OpenAIBody(_OpenAIError(exc.message, exc.type, exc.code, exc.param)))


def error_headers(exc: ThanosError) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    return headers
