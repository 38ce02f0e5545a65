"""What a request is assumed to need before its usage is known: the output tokens a budget
reservation assumes, and the input tokens of an embeddings request."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thanos_asgi.types import EmbeddingRequest

DEFAULT_OUTPUT_TOKENS = 4096  # reserved when neither the request nor the instance says
MAX_OUTPUT_TOKENS = 1_000_000  # no model writes more in one answer; reservations stop here


def reservable_output(limit: int | None, default: int) -> int:
    """The output tokens a reservation assumes: `limit` within 1..MAX_OUTPUT_TOKENS, and
    `default` when there is none, or it is zero or negative (a provider may then write as
    much as it likes, so nothing less can be assumed)."""
    if limit is None or limit < 1:
        return min(max(default, 1), MAX_OUTPUT_TOKENS)
    return min(limit, MAX_OUTPUT_TOKENS)


def estimate_embedding_tokens(request: EmbeddingRequest, bytes_per_token: int = 4) -> int:
    """The input tokens of an embeddings request: token arrays exactly, text at ~4 UTF-8
    bytes per token (as chat prompts are estimated), at least 1 per input. With
    `bytes_per_token=1`: an upper bound, for budgets (see `prompt_token_bound`)."""
    inputs = [request.input] if isinstance(request.input, str) else request.input
    total = 0
    for item in inputs:
        if isinstance(item, str):
            total += max(1, -(-len(item.encode()) // bytes_per_token))
        else:
            total += max(1, len(item)) if isinstance(item, list) else 1
    return total
