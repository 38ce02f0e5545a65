"""Requests- and tokens-per-minute windows: whose window a request counts in, taking one,
and the `x-ratelimit-*` figures of a result. Shared by HTTP, gRPC and the admission path."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from thanos_asgi.context import Quota
from thanos_asgi.exceptions import ThanosError

if TYPE_CHECKING:
    from thanos_asgi.context import KeyPolicy
    from thanos_asgi.governance.state import StateBackend, WindowResult

MINUTE = 60.0


class RateLimited(ThanosError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


def request_subject(
    policy: KeyPolicy | None, address: str, rpm_per_ip: int | None
) -> tuple[str, int | None]:
    """Whose requests-per-minute window a request counts in (its key, else its address),
    and that window's limit (None: no limit). Shared by HTTP and gRPC."""
    if policy is not None:
        return f"key:{policy.key_id}", policy.rpm
    return f"ip:{address}", rpm_per_ip


async def take_request(
    state: StateBackend, subject: str, limit: int, quota: Quota | None = None
) -> WindowResult:
    """Count one request in `subject`'s minute (noted in `quota`, for the `x-ratelimit-*`
    headers); RateLimited, with Retry-After, when over."""
    result = await state.window_take(f"rpm:{subject}", 1, limit, MINUTE)
    if quota is not None:
        quota.requests = window_of(result)
    if not result.allowed:
        over = f"{subject.replace(':', ' ')} is over {limit} requests per minute"
        raise RateLimited(over).after(math.ceil(result.reset_after))
    return result


def window_of(result: WindowResult) -> tuple[int, int, float]:
    return result.limit, max(result.limit - result.used, 0), result.reset_after
