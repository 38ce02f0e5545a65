"""The limits `Accounting` checks, as plain functions: which budgets apply to a request, the
key's tokens-per-minute hold, the provider's requests per minute, and the refusals they give
(in words a client can act on, with when to retry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import ProviderUnavailable
from thanos_asgi.governance import _spend
from thanos_asgi.governance._spend import money
from thanos_asgi.governance.estimates import MAX_OUTPUT_TOKENS
from thanos_asgi.governance.windows import MINUTE, RateLimited, window_of

if TYPE_CHECKING:
    from thanos_asgi.config import Config
    from thanos_asgi.context import Context
    from thanos_asgi.governance.state import StateBackend, WindowResult


class BudgetExceeded(ProviderUnavailable):
    status = 429
    type = "budget_exceeded"
    code = "budget_exceeded"


@dataclass
class Tokens:
    """A key's TPM hold for the whole request, corrected once usage is known."""

    key: str | None
    estimate: int


def budgets_for(
    config: Config, global_limit: float | None, instance: str, ctx: Context
) -> list[tuple[str, float, str]]:
    """(state key, limit, label) of every budget a request to `instance` counts against."""
    limits = []
    if global_limit is not None:
        limits.append(("global", global_limit, "monthly"))
    policy = ctx.policy
    if policy is not None and policy.budget_usd is not None:
        limits.append((f"key:{policy.key_id}", policy.budget_usd, "key's"))
    own = config.cost.providers.get(instance)
    if own is not None and own.monthly_budget_usd is not None:
        limits.append((f"provider:{instance}", own.monthly_budget_usd, instance))
    if not limits:  # the usual case: no month to format
        return []
    month = _spend.month_label()
    return [(f"budget:{month}:{scope}", limit, label) for scope, limit, label in limits]


async def refusal(
    state: StateBackend, key: str, limit: float, label: str, cost: float
) -> BudgetExceeded:
    spent, reserved = await state.spent(key)
    left = max(limit - spent - reserved, 0.0)
    held = f", {money(reserved)} held by requests in flight" if reserved else ""
    return BudgetExceeded(
        f"the {label} budget of {money(limit)} this month has {money(left)} left "
        f"({money(spent)} spent{held}); this request would cost up to {money(cost)}"
    ).after(_spend.until_next_month())


async def provider_rpm(state: StateBackend, config: Config, instance: str) -> None:
    """Take one request from `instance`'s `rate_limit_rpm`; ProviderUnavailable when full."""
    rpm = config.providers[instance].rate_limit_rpm
    if rpm is None:
        return
    taken = await state.window_take(f"rpm:provider:{instance}", 1, rpm, MINUTE)
    if not taken.allowed:
        raise ProviderUnavailable(
            f"provider '{instance}' is at its limit of {rpm} requests per minute",
            code="provider_rate_limited",
        ).after(taken.reset_after)


def tpm_estimate(prompt: int, output: int | None) -> int:
    """The tokens a request takes from its key's window: `prompt` plus its output limit,
    clamped to 0..MAX_OUTPUT_TOKENS (a negative or absurd limit takes neither less nor more)."""
    return max(prompt, 0) + min(max(output or 0, 0), MAX_OUTPUT_TOKENS)


def tokens_hold(ctx: Context, key: str, estimate: int, taken: WindowResult) -> Tokens:
    """The key's TPM hold, noted in `ctx.quota`; RateLimited if the window refused it."""
    ctx.quota.tokens = window_of(taken)
    if not taken.allowed:
        raise RateLimited(
            f"the key '{key.split(':', 2)[2]}' is over its {taken.limit} tokens per minute "
            f"(this request needs about {estimate})"
        ).after(taken.reset_after)
    return Tokens(key, estimate)
