"""ThanosError -> gRPC status: the one table the gRPC front-end uses, keyed by HTTP status."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from thanos_asgi.exceptions import ThanosError

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(exc: ThanosError) -> grpc.StatusCode:
    return STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)


def trailers(exc: ThanosError) -> tuple[tuple[str, str], ...]:
    """`thanos-error-type`, `thanos-error-code`, and `retry-after` (whole seconds) when known."""
    metadata = [("thanos-error-type", exc.type), ("thanos-error-code", exc.code or "")]
    if exc.retry_after is not None:
        metadata.append(("retry-after", str(max(1, round(exc.retry_after)))))
    return tuple(metadata)


async def abort(context: Any, exc: ThanosError, code: grpc.StatusCode | None = None) -> NoReturn:
    """End the call with the status for `exc` (or `code`, when the RPC knows better: a login
    server failing to start a login is UNAVAILABLE, not the 400 `LoginFailed` says over
    HTTP); the message never carries a secret, the trailers are those of `exc`."""
    await context.abort(code or status_code(exc), exc.message, trailers(exc))
    raise AssertionError("unreachable: ServicerContext.abort raises")  # pragma: no cover
