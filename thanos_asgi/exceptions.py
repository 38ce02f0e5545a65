"""The exceptions thanos-asgi raises, in one tree.

ThanosError                      base; every error carries an HTTP status, a type and a code
├── ConfigError                  a config file or value that cannot be used (file, key path, reason)
├── ClientError                  the client's request is at fault
│   ├── InvalidRequest           400: malformed JSON, wrong types, missing fields
│   ├── AuthenticationError      401: missing or wrong client key
│   ├── PermissionDenied         403: the key may not use this model or endpoint
│   ├── NotFound                 404: unknown endpoint
│   │   └── ModelNotFound        404: no provider serves this model name
│   ├── MethodNotAllowed         405
│   └── BodyTooLarge             413: refused before the body is read whole
├── ProviderUnavailable          503: the routed provider cannot be used (no key, not built, ...)
│   └── CredentialsCooling       429: every credential of a pooled instance is cooling
└── UpstreamError                a provider failed; names the provider instance, never a secret
    ├── UpstreamStatusError      the provider answered with an error status (mapped by status)
    ├── UpstreamConnectError     could not connect (502), or the pool is exhausted (503)
    ├── UpstreamTimeout          no answer in time (504)
    └── UpstreamProtocolError    the provider sent something we cannot read (502)

Front-ends turn these into the client's own error shape in one table each
(`thanos_asgi.frontends.errors` for OpenAI and Anthropic JSON); nothing else builds error bodies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class ThanosError(Exception):
    status: int = 500
    type: str = "internal_error"
    code: str | None = None
    param: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    reset_after: float | None = None  # a rate limit's announced reset, in seconds (429/402)
    # What the request had tried when this ended it, set by the dispatcher for the error
    # answer's headers: "instance:outcome" per attempt, the last (instance, model) tried and
    # the time the failed attempts spent with providers.
    attempts: Sequence[str] = ()
    tried: tuple[str, str] | None = None
    upstream_ms: float = 0.0

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param

    def after(self, seconds: float) -> Self:
        """This error, to be tried again in `seconds` (Retry-After). Raised as one expression,
        `raise X(...).after(s)`: an error named by a local of the frame that raises it would
        hold that frame's traceback, which holds the local, in a cycle (the request with it)."""
        self.retry_after = seconds
        return self


class ConfigError(ThanosError):
    type = "config_error"

    def __init__(self, message: str, *, source: str = "", path: str = "") -> None:
        where = ": ".join(part for part in (source, path) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.path = path
        self.reason = message


class ClientError(ThanosError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    code = "invalid_request"


class AuthenticationError(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ClientError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"
    param = "model"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class BodyTooLarge(ClientError):
    status = 413
    type = "request_too_large"
    code = "request_too_large"


class ProviderUnavailable(ThanosError):
    status = 503
    type = "provider_unavailable"
    code = "provider_unavailable"
    retryable = True


class CredentialsCooling(ProviderUnavailable):
    """Every credential of a pool is cooling after 429s; `retry_after`: the earliest reset."""

    status = 429
    type = "rate_limit_error"
    code = "credentials_cooling"


class UpstreamError(ThanosError):
    status = 502
    type = "upstream_error"
    code: str | None = "upstream_error"
    retryable = True
    # The request may have reached the provider (the connection failed after it was written,
    # before any answer): another candidate may take it, this provider is not sent it again.
    maybe_delivered = False

    def __init__(self, message: str, *, provider: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.provider = provider


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status; `upstream_status` is what it sent."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int,
        upstream_type: str | None = None,
        upstream_code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type
        self.upstream_code = upstream_code
        self.param = param
        self.retry_after = retry_after
        self.status, self.type, self.code, self.retryable = _map_status(
            upstream_status, upstream_type, upstream_code
        )


def _map_status(
    status: int, upstream_type: str | None, upstream_code: str | None
) -> tuple[int, str, str | None, bool]:
    """What an upstream status means for our client: (status, type, code, retryable)."""
    if status in (401, 403):  # this instance's key is wrong: the next candidate may work
        return 502, "upstream_error", "upstream_authentication_failed", True
    if status == 429:
        return 429, "rate_limit_error", upstream_code or "rate_limit_exceeded", True
    if status == 404:
        return 404, "invalid_request_error", upstream_code or "model_not_found", False
    if status == 413:
        return 413, "invalid_request_error", upstream_code or "request_too_large", False
    if status == 408:
        return 504, "timeout_error", "upstream_timeout", True
    if 400 <= status < 500:
        return 400, upstream_type or "invalid_request_error", upstream_code, False
    if status in (503, 529):
        return 503, "upstream_error", upstream_code or "upstream_overloaded", True
    if status == 504:
        return 504, "timeout_error", "upstream_timeout", True
    return 502, "upstream_error", upstream_code or "upstream_error", True


class UpstreamConnectError(UpstreamError):
    code = "upstream_unreachable"


POOL_EXHAUSTED = "upstream_pool_exhausted"  # an UpstreamConnectError's code: our pool was full


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_bad_response"
