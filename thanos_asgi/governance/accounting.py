"""Money and tokens around each request: limits, budgets, cost and the usage ledger.

Before a request goes to a provider:
- the key's tokens-per-minute window takes the request's estimated tokens (`admit_request`);
- the provider instance's `rate_limit_rpm` window takes one request (busy -> next candidate);
- every budget that applies (the global `[cost] monthly_budget_usd` up to `pause_at_percent`,
  the key's `budget_usd`, the instance's `monthly_budget_usd`) reserves the request's
  worst-case cost atomically (`admit`): one token per byte of prompt text (no tokenizer
  makes more) at the input price, the output limit at the output price. Free instances
  (Ollama, `pricing_model = "free"`) reserve nothing and keep working when the budget is
  spent.
After it (`settle`): the reservation is replaced by the real cost (or kept whole when the
real usage is unknown, so spend is never under-counted), the token window is corrected,
and one ledger row is written before the answer's last byte goes out.

Every route that reaches a provider passes the same steps, in this order: the key's model
allow-list (the gateway), the key's requests per minute (counted once per request: by
RateLimitMiddleware or gRPC's access check when they ran, else here), its tokens per minute
(`admit_tokens`), then the budgets (`admit_cost`), and `settle` after the call.
A chat request's tokens per minute and its first candidate's budgets are taken in one step
(`admit_chat`: one round trip to Redis) when nothing else comes between them.

Reservations are never negative: an output limit that is missing, zero or negative reserves
the instance's default output (`max_tokens` or 4096), one above `MAX_OUTPUT_TOKENS` is cut
to it, and the state backends count any negative amount as 0. So no request can lower what
others see as spent, reserved or used, whatever a client sends and whatever validation ran.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from thanos_asgi.context import Context
from thanos_asgi.governance import _spend
from thanos_asgi.governance._holds import Holds
from thanos_asgi.governance._limits import (
    BudgetExceeded,
    Tokens,
    budgets_for,
    provider_rpm,
    refusal,
    tokens_hold,
    tpm_estimate,
)
from thanos_asgi.governance._settlements import Settlements
from thanos_asgi.governance._spend import MONTH_TTL
from thanos_asgi.governance.estimates import (
    DEFAULT_OUTPUT_TOKENS,
    reservable_output,
)
from thanos_asgi.governance.pricing import Pricing, estimate_prompt_tokens, prompt_token_bound
from thanos_asgi.governance.state import (
    SpendLost,
    SpendSettling,
    StateUnavailable,
    WindowResult,
)
from thanos_asgi.governance.windows import MINUTE, take_request
from thanos_asgi.types import Target

if TYPE_CHECKING:
    from thanos_asgi.config import Config
    from thanos_asgi.governance.ledgers import UsageLedger
    from thanos_asgi.governance.state import StateBackend
    from thanos_asgi.types import ChatRequest, Usage

log = logging.getLogger("thanos_asgi.governance.accounting")
_PATIENCE = 10  # rebuilds and graces one reservation waits through before it gives up


@dataclass
class Admission:
    """What one attempt holds: budget reservations and the estimate they were made on."""

    instance: str
    model: str
    worst_case: float = 0.0
    reservations: list[str] = field(default_factory=list)
    warning: str | None = None


class Accounting:
    def __init__(
        self, config: Config, *, pricing: Pricing, state: StateBackend, ledger: UsageLedger | None
    ) -> None:
        self.config = config
        self.pricing = pricing
        self.state = state
        self.ledger = ledger
        cost = config.cost
        self.global_limit = (
            cost.monthly_budget_usd * cost.pause_at_percent / 100
            if cost.monthly_budget_usd is not None
            else None
        )
        self.warn_at = (
            cost.monthly_budget_usd * cost.warn_at_percent / 100
            if cost.monthly_budget_usd is not None
            else None
        )
        self.last_fraction: float | None = None
        self._restore_lock = asyncio.Lock()
        self._unmetered = frozenset(  # instances without requests per minute or a budget
            name
            for name, provider in config.providers.items()
            if provider.rate_limit_rpm is None
            and getattr(cost.providers.get(name), "monthly_budget_usd", None) is None
        )
        self._restores = 0
        self.holds = Holds(state, self.restore)
        shared = ledger is not None and ledger.shared and state.shared  # rows before holds go
        flush = ledger.flush if ledger is not None and shared else None
        self._queue = Settlements(state, self.holds, self._warning, flush)

    def spend_fraction(self) -> float | None:
        """Share of the global monthly budget spent, as last seen (for dynamic switching)."""
        return self.last_fraction

    # -- before -----------------------------------------------------------------------------

    async def admit_request(self, request: ChatRequest, ctx: Context) -> Tokens:
        """The key's requests and tokens per minute for a chat request."""
        policy = ctx.policy
        if policy is None or (policy.tpm is None and policy.rpm is None):
            return Tokens(None, 0)
        prompt = estimate_prompt_tokens(request) if policy.tpm is not None else 0
        return await self.admit_tokens(prompt, request.output_limit, ctx)

    async def admit_tokens(self, prompt: int, output: int | None, ctx: Context) -> Tokens:
        """The key's requests per minute (unless counted already) and tokens per minute:
        `prompt` tokens plus `output` (clamped to 0..MAX_OUTPUT_TOKENS)."""
        policy = ctx.policy
        if policy is None:
            return Tokens(None, 0)
        await self.count_request(ctx)
        if policy.tpm is None:
            return Tokens(None, 0)
        estimate = tpm_estimate(prompt, output)
        key = f"tpm:key:{policy.key_id}"
        taken = await self.state.window_take(key, estimate, policy.tpm, MINUTE)
        return tokens_hold(ctx, key, estimate, taken)

    async def admit_chat(
        self, request: ChatRequest, ctx: Context, first: Target | None
    ) -> tuple[Tokens, Admission | None]:
        """`admit_request`, and in the same step (one round trip to a shared store, not two)
        `admit(first, ...)` when that is all it would do: a budget applies, `first` has no
        requests-per-minute limit and the cost is bounded. The admission made (None: none
        made, or refused: the dispatcher's `admit` says why) is for the first attempt."""
        policy = ctx.policy
        if first is None or policy is None or policy.tpm is None:
            return await self.admit_request(request, ctx), None
        plan = self._plan(first, request, ctx)
        if plan is None:
            return await self.admit_request(request, ctx), None
        budgets, worst = plan
        await self.count_request(ctx)
        estimate = tpm_estimate(estimate_prompt_tokens(request), request.output_limit)
        key, label = f"tpm:key:{policy.key_id}", budgets[0][0].split(":", 2)[1]
        keys = [k for k, _ in budgets]

        def landed(taken: WindowResult, reserved: bool | None) -> None:  # (we were cancelled)
            if taken.allowed:
                self._queue.tokens(key, -estimate)
            self._unhold(keys, worst, reserved)

        taken, reserved = await self.state.take_and_reserve(
            (key, estimate, policy.tpm, MINUTE),
            budgets,
            worst,
            MONTH_TTL,
            marker=_spend.marker(label),
            owner=self.holds.owner,
            landed=landed,
        )
        tokens = tokens_hold(ctx, key, estimate, taken)
        if not reserved:
            return tokens, None
        admission = Admission(first.instance, first.model, worst, keys)
        for budget in admission.reservations:
            self.holds.add(budget, worst)
        try:
            admission.warning = await self._warning()
        except BaseException:  # (the store failed, or we were cancelled): nothing kept
            self.settle(admission, None, first.model, 0.0)
            self.refund(tokens)
            raise
        return tokens, admission

    def _plan(
        self, target: Target, request: ChatRequest, ctx: Context
    ) -> tuple[list[tuple[str, float]], float] | None:
        """(the budgets `admit` would reserve on `target`, the amount) if that is all it does."""
        if self.config.providers[target.instance].rate_limit_rpm is not None:
            return None
        budgets = budgets_for(self.config, self.global_limit, target.instance, ctx)
        if not budgets or self.pricing.is_free(target.instance):
            return None
        output = reservable_output(request.output_limit, self._default_output(target.instance))
        prompt = max(prompt_token_bound(request), 0)
        worst = self.pricing.worst_case(target.instance, target.model, prompt, output)
        if worst is not None and not 0 <= worst < math.inf:
            return None  # (the dispatcher's `admit` refuses it, as ever)
        return [(key, limit) for key, limit, _ in budgets], worst or 0.0

    async def count_request(self, ctx: Context) -> None:
        """The key's requests per minute, unless a layer above counted this request."""
        policy = ctx.policy
        if policy is not None and policy.rpm is not None and ctx.quota.requests is None:
            await take_request(self.state, f"key:{policy.key_id}", policy.rpm, ctx.quota)

    async def admit(self, target: Target, request: ChatRequest, ctx: Context) -> Admission:
        """The provider's requests per minute, then every budget's worst-case reservation."""
        if self.global_limit is None and target.instance in self._unmetered:
            policy = ctx.policy
            if policy is None or policy.budget_usd is None:  # no limit applies: nothing held
                return Admission(target.instance, target.model)
        output = reservable_output(request.output_limit, self._default_output(target.instance))
        return await self.admit_cost(target, ctx, lambda: prompt_token_bound(request), output)

    async def admit_cost(
        self, target: Target, ctx: Context, prompt: Callable[[], int], output: int
    ) -> Admission:
        """As `admit`, for `prompt()` input tokens (asked only when a budget applies) and
        `output` output tokens."""
        admission = Admission(target.instance, target.model)
        if self.config.providers[target.instance].rate_limit_rpm is not None:
            await provider_rpm(self.state, self.config, target.instance)
        budgets = budgets_for(self.config, self.global_limit, target.instance, ctx)
        if not budgets or self.pricing.is_free(target.instance):
            return admission
        worst = self.pricing.worst_case(
            target.instance, target.model, max(prompt(), 0), max(output, 0)
        )
        if worst is not None and not 0 <= worst < math.inf:
            raise BudgetExceeded(f"the cost of this request on '{target.instance}' has no bound")
        admission.worst_case = worst or 0.0
        try:
            for key, limit, label in budgets:
                if not await self._reserve(key, admission.worst_case, limit):
                    await self.release(admission)  # (empties the reservations)
                    raise await refusal(self.state, key, limit, label, admission.worst_case)
                admission.reservations.append(key)
            admission.warning = await self._warning()
        except BaseException:  # the store failed or we were cancelled after some reserved
            self.settle(admission, None, target.model, 0.0)  # (in the background)
            raise
        return admission

    async def _reserve(self, key: str, amount: float, limit: float) -> bool:
        label = key.split(":", 2)[1]
        owner = self.holds.owner
        for _ in range(_PATIENCE):
            try:
                landed = partial(self._unhold, [key], amount)  # (if we are cancelled)
                granted = await self.state.reserve(
                    key,
                    amount,
                    limit,
                    MONTH_TTL,
                    marker=_spend.marker(label),
                    owner=owner,
                    landed=landed,
                )
            except SpendLost:
                await self.restore(label)
                continue
            except SpendSettling as settling:  # the others are putting their holds back
                await asyncio.sleep(settling.wait)
                continue
            if granted:
                self.holds.add(key, amount)
            return granted
        raise StateUnavailable("the budget month keeps being rebuilt; try again shortly")

    def _unhold(self, keys: list[str], amount: float, reserved: bool | None) -> None:
        """Release what a cancelled request's reservation held (it landed after it left)."""
        if reserved:
            for key in keys:
                self.holds.add(key, amount)
            self._queue.budgets(keys, amount, 0.0)

    async def restore(self, label: str) -> None:
        """Rebuild the month's spend from the ledger (once, however many requests ask)."""
        seen = self._restores
        async with self._restore_lock:
            if self._restores == seen:
                await _spend.restore(self.state, self.ledger, label)
                self._restores += 1

    def _default_output(self, instance: str) -> int:
        return self.config.providers[instance].max_tokens or DEFAULT_OUTPUT_TOKENS

    async def _warning(self) -> str | None:
        if self.global_limit is None or not self.config.cost.monthly_budget_usd:
            return None
        spent, reserved = await self.state.spent(f"budget:{_spend.month_label()}:global")
        self.last_fraction = (spent + reserved) / self.config.cost.monthly_budget_usd
        if self.warn_at is not None and spent + reserved >= self.warn_at:
            return f"{self.last_fraction:.0%} of the monthly budget is used"
        return None

    # -- after ------------------------------------------------------------------------------

    async def release(self, admission: Admission) -> None:
        """The attempt failed before any token was spent: give the reservations back."""
        for key in admission.reservations:
            self.holds.remove(key, admission.worst_case)
            await self.state.settle(
                key, admission.worst_case, 0.0, MONTH_TTL, owner=self.holds.owner
            )
        admission.reservations.clear()

    def cost(self, instance: str, model: str, usage: Usage | None) -> float | None:
        if usage is None:
            return None
        return self.pricing.cost(instance, model, usage)

    def settle(
        self, admission: Admission, usage: Usage | None, model: str, cost: float | None = None
    ) -> float | None:
        """Replace reservations with the real cost of `model` (in the background); return it.
        `cost`: that of `usage`, when the caller knows it already.

        When the real usage is unknown (a stream cut short), the worst case stays spent."""
        if cost is None:
            cost = self.cost(admission.instance, model, usage)
        if admission.reservations:
            actual = admission.worst_case if cost is None else cost
            self._queue.budgets(admission.reservations, admission.worst_case, actual)
        return cost

    def settle_tokens(self, tokens: Tokens, usage: Usage | None) -> None:
        """Correct the key's TPM window from the estimate to what was used (or refund it)."""
        if tokens.key is None:
            return
        used = (
            tokens.estimate
            if usage is None
            else max(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 0)
        )
        self._queue.tokens(tokens.key, used - tokens.estimate)

    def refund(self, tokens: Tokens) -> None:
        """No provider took the request: the TPM hold goes back."""
        if tokens.key is not None:
            self._queue.tokens(tokens.key, -tokens.estimate)

    async def drain(self) -> None:
        """Wait for settlements under way (at shutdown, and in tests)."""
        await self._queue.drain()
