"""Embeddings against their ordered candidates, each attempt inside the admission path.

The gateway has already checked the key's allow-list, rpm and tpm; here every candidate's
budgets reserve the request's input cost before it is tried (a spent budget moves on to the
next candidate, as for chat), the reservation is released on every failure, cancellation
included, and settled to the real cost on success, with one ledger row carrying the key id.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from thanos_asgi.core.dispatch import Recorder, Reply, attempt_code
from thanos_asgi.exceptions import ProviderUnavailable, ThanosError
from thanos_asgi.governance.estimates import estimate_embedding_tokens
from thanos_asgi.types import EmbeddingRequest, EmbeddingResponse, Usage

if TYPE_CHECKING:
    from thanos_asgi.context import Context
    from thanos_asgi.core.routing import Target
    from thanos_asgi.governance.accounting import Accounting
    from thanos_asgi.providers.base import Provider


class Embedder:
    def __init__(
        self, providers: Mapping[str, Provider], accounting: Accounting, record: Recorder
    ) -> None:
        self.providers = providers
        self.accounting = accounting
        self.record = record

    async def run(
        self, targets: list[Target], request: EmbeddingRequest, prompt: int, ctx: Context
    ) -> tuple[EmbeddingResponse, Usage]:
        """The first candidate's answer and its usage (`prompt`: the estimated tokens)."""
        last: ThanosError | None = None
        attempts: list[str] = []  # for the error answer's headers, as `dispatch` notes them
        for target in targets:
            reply = Reply(target, [])
            reply.request_id, reply.key_id = ctx.request_id, ctx.key_id
            try:
                return await self._try(reply, request, prompt, ctx)
            except ThanosError as exc:
                self.record(reply, "error", False)
                attempts.append(f"{target.instance}:{attempt_code(exc)}")
                exc.attempts, exc.tried = attempts, target
                if not exc.retryable:
                    raise
                last = exc
        raise last or ProviderUnavailable(f"no provider can embed with '{request.model}'")

    async def _try(
        self, reply: Reply, request: EmbeddingRequest, prompt: int, ctx: Context
    ) -> tuple[EmbeddingResponse, Usage]:
        target = reply.target
        bound = partial(estimate_embedding_tokens, request, 1)  # budgets: one token a byte
        admission = await self.accounting.admit_cost(target, ctx, bound, 0)
        try:
            response = await self.providers[target.instance].embed(request, target.model)
        except BaseException:
            await self.accounting.release(admission)
            raise
        counted = response.usage.prompt_tokens  # not reported: the estimate is billed
        reply.usage = usage = Usage(prompt_tokens=counted if counted > 0 else prompt)
        reply.cost_usd = self.accounting.settle(admission, usage, target.model)
        self.record(reply, "ok", True)
        return response, usage
