"""Exceptions to the client's error shape: the one table each front-end uses."""

from __future__ import annotations

import msgspec

from thanos_asgi.exceptions import ThanosError

_encode = msgspec.json.Encoder().encode
MAX_MESSAGE = 2000  # characters of an error message; what it quotes is bounded where quoted


def _message(exc: ThanosError) -> str:
    message = exc.message
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


class _OpenAIError(msgspec.Struct):
    message: str
    type: str
    code: str | None
    param: str | None


class _OpenAIBody(msgspec.Struct):
    error: _OpenAIError


def openai_error(exc: ThanosError) -> bytes:
    """`{"error": {"message", "type", "code", "param"}}`, as OpenAI sends it."""
    param = exc.param[:MAX_MESSAGE] if exc.param else exc.param
    return _encode(_OpenAIBody(_OpenAIError(_message(exc), exc.type, exc.code, param)))


def error_headers(exc: ThanosError) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    return headers


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class _AnthropicError(msgspec.Struct):
    type: str
    message: str


class _AnthropicBody(msgspec.Struct, tag_field="type", tag="error"):
    error: _AnthropicError


def anthropic_error(exc: ThanosError) -> bytes:
    """`{"type": "error", "error": {"type", "message"}}`, as Anthropic sends it."""
    kind = _ANTHROPIC_TYPES.get(exc.status, "api_error")
    return _encode(_AnthropicBody(_AnthropicError(kind, _message(exc))))


class _OllamaBody(msgspec.Struct):
    error: str


def ollama_error(exc: ThanosError) -> bytes:
    """`{"error": "..."}`, as Ollama sends it."""
    return _encode(_OllamaBody(exc.message))


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class _GoogleError(msgspec.Struct):
    code: int
    message: str
    status: str


class _GoogleBody(msgspec.Struct):
    error: _GoogleError


def gemini_error(exc: ThanosError) -> bytes:
    """`{"error": {"code", "message", "status"}}`, as Google's APIs send it."""
    status = _GOOGLE_STATUS.get(exc.status, "INTERNAL")
    return _encode(_GoogleBody(_GoogleError(exc.status, exc.message, status)))


ANTHROPIC_PATHS = ("/v1/messages",)  # endpoints whose clients expect Anthropic's error shape
OLLAMA_PATHS = ("/api/",)
GEMINI_PATHS = ("/v1beta/",)


def error_body(path: str, exc: ThanosError) -> bytes:
    """The error in the shape the client of `path` expects."""
    if path.startswith("/v1/"):
        return anthropic_error(exc) if path.startswith(ANTHROPIC_PATHS) else openai_error(exc)
    if path.startswith(OLLAMA_PATHS):
        return ollama_error(exc)
    return gemini_error(exc) if path.startswith(GEMINI_PATHS) else openai_error(exc)
