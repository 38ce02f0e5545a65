"""Exceptions to the client's error shape: the one table each front-end uses, and the one
function (`send_error`) every HTTP error answer goes out through, with its headers."""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.asgi import Headers, Scope, Send, respond, route_path

_encode = msgspec.json.Encoder().encode
MAX_MESSAGE = 2000  # characters of an error message; what it quotes is bounded where quoted


def _message(exc: ThanosError) -> str:
    message = exc.message
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


STARTED = "thanos.started"  # scope key: perf_counter() when the outermost layer got the request


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


def error_headers(exc: ThanosError, scope: Scope | None = None) -> Headers:
    """An error answer's headers: its content type, Retry-After when known, and what every
    answer carries: `x-thanos-attempts` (empty when no provider was tried),
    `x-thanos-overhead-ms` (with `scope`: time since the request came in, less the time
    failed attempts spent with providers) and, once a provider was tried,
    `x-thanos-provider` and `x-thanos-model` (the last one tried)."""
    headers = [(b"content-type", b"application/json")]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    headers.append((b"x-thanos-attempts", _header_text(",".join(exc.attempts))))
    if exc.tried is not None:
        instance, model = exc.tried
        headers.append((b"x-thanos-provider", _header_text(instance)))
        headers.append((b"x-thanos-model", _header_text(model)))
    started = scope.get(STARTED) if scope is not None else None
    if started is not None:
        overhead = (time.perf_counter() - started) * 1000 - exc.upstream_ms
        headers.append((b"x-thanos-overhead-ms", f"{max(overhead, 0.0):.3f}".encode()))
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


async def send_error(
    scope: Scope, send: Send, exc: ThanosError, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer `exc`: its status, the body in the shape the path's clients expect, and
    `error_headers` plus `extra`."""
    headers = error_headers(exc, scope)
    headers.extend(extra)
    await respond(send, exc.status, error_body(route_path(scope), exc), headers)


def _header_text(text: str, limit: int = 256) -> bytes:
    """`text` as a header value: printable ASCII, bounded (model names may come from clients)."""
    text = text[:limit]
    if text.isascii() and text.isprintable():
        return text.encode()
    return bytes(byte if 32 <= byte < 127 else 63 for byte in text.encode("ascii", "replace"))
