"""Parameter validation at the front door: one home, on the canonical request.

Every front-end (OpenAI chat and legacy completions, embeddings, Anthropic messages, gRPC,
and any added later) decodes into `ChatRequest` / `EmbeddingRequest` and the gateway runs
these checks before routing and admission, so nothing out of range is reserved against a
budget or forwarded to a provider. A failure is an InvalidRequest (400) whose `param` is the
JSON path, in the client's error shape.

Ranges (OpenAI's documented ones, the canonical format's):

- `model`: at most 256 bytes of UTF-8, printable (`sanitize.check_model_name`).
- `max_tokens`, `max_completion_tokens`: >= 1 and <= the model's output limit, models.dev's
  `limit.output` (`governance.catalogue`), else `[server] max_output_tokens_ceiling` (131072).
- `n`: 1 .. what the provider kind can do (`ProviderSpec.max_choices`: 128 for OpenAI, xAI
  and plain OpenAI-compatible servers, 8 for Gemini and Vertex, else 1).
- `temperature` 0 .. 2; `top_p` 0 .. 1; `presence_penalty`, `frequency_penalty` -2 .. 2;
  `seed` a signed 64-bit integer; `top_logprobs` 0 .. 20; `logit_bias` values -100 .. 100.
- embeddings: `input` one string, or a list of strings, of token ids or of token-id lists
  (not mixed), never empty; `dimensions` >= 1.

The first candidate (the model the client named, as routed) must accept the request; later
fallbacks that cannot (a smaller output limit, fewer choices) are skipped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.governance.catalogue import Catalogue
from thanos_asgi.providers import SPECS, effective_kind
from thanos_asgi.sanitize import check_model_name
from thanos_asgi.types import ChatRequest, EmbeddingRequest, Target

if TYPE_CHECKING:
    from thanos_asgi.config import Config

__all__ = ["Validator", "check_embedding", "check_ranges"]

INT64 = 2**63
MAX_CHOICES = 128
_FLOAT_RANGES = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)
_OUTPUT_NAMES = {"anthropic": "max_tokens"}  # how a dialect names max_completion_tokens


def check_ranges(request: ChatRequest, wire: str = "") -> None:
    """Everything that holds whatever the target: model name form and documented ranges."""
    check_model_name(request.model)
    r = request
    if (  # the usual request sets none of them: nothing to check (one test each)
        r.temperature is None
        and r.top_p is None
        and r.max_tokens is None
        and r.max_completion_tokens is None
        and r.n is None
        and r.seed is None
        and r.presence_penalty is None
        and r.frequency_penalty is None
        and r.top_logprobs is None
        and not r.logit_bias
    ):
        return
    for name, low, high in _FLOAT_RANGES:
        value = getattr(request, name)
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise _invalid(name, f"must be between {low:g} and {high:g} (got {value!r})")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise _invalid(_output_name(name, wire), f"must be at least 1 (got {value})")
    _check_int("n", request.n, 1, MAX_CHOICES)
    _check_int("seed", request.seed, -INT64, INT64 - 1)
    _check_int("top_logprobs", request.top_logprobs, 0, 20)
    for token, bias in (request.logit_bias or {}).items():
        if not (math.isfinite(bias) and -100 <= bias <= 100):
            raise _invalid(f"logit_bias.{token[:32]}", f"must be between -100 and 100 (got {bias})")


def check_embedding(request: EmbeddingRequest) -> None:
    """Model name form, `input` of one type and not empty, `dimensions` >= 1."""
    check_model_name(request.model)
    items = request.input
    if items == "" or items == []:
        raise _invalid("input", "must not be empty")
    if isinstance(items, list):
        kinds = {type(item) for item in items}
        if len(kinds) > 1:
            raise _invalid(
                "input",
                "must be one string, or a list of strings, of token ids, or of token-id lists "
                "(not a mix)",
            )
        for index, item in enumerate(items):
            if isinstance(item, list) and not item:
                raise _invalid(f"input[{index}]", "must not be empty")
    _check_int("dimensions", request.dimensions, 1, INT64 - 1)


class Validator:
    """The checks that depend on the target: output limits and how many choices."""

    def __init__(self, config: Config, catalogue: Catalogue | None = None) -> None:
        self.ceiling = config.server.max_output_tokens_ceiling
        self.catalogue = catalogue or Catalogue.load_bundled()
        self.kinds = {name: effective_kind(name, p.kind) for name, p in config.providers.items()}

    def output_limit(self, target: Target) -> int:
        """The most output tokens a request to `target` may ask for."""
        kind = self.kinds.get(target.instance, "")
        return self.catalogue.output_limit(kind, target.model) or self.ceiling

    def max_choices(self, target: Target) -> int:
        spec = SPECS.get(self.kinds.get(target.instance, ""))
        return spec.max_choices if spec else 1

    def fit(self, request: ChatRequest, targets: list[Target], wire: str = "") -> list[Target]:
        """`targets` that can serve `request`; InvalidRequest when the first cannot."""
        if request.output_limit is None and (request.n or 1) == 1:
            return targets  # nothing here depends on the target
        problem = self._misfit(request, targets[0], wire)
        if problem is not None:
            try:
                raise problem
            finally:  # (its traceback holds this frame: no cycle through the local)
                problem = None
        return [targets[0], *(t for t in targets[1:] if self._misfit(request, t, wire) is None)]

    def _misfit(self, request: ChatRequest, target: Target, wire: str) -> InvalidRequest | None:
        where = f"{target.instance}/{target.model}"
        wanted, limit = request.output_limit, self.output_limit(target)
        if wanted is not None and wanted > limit:
            name = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            return _invalid(
                _output_name(name, wire),
                f"is {wanted}, more than {where[:300]} can write ({limit} tokens)",
            )
        choices, most = request.n or 1, self.max_choices(target)
        if choices > most:
            return _invalid("n", f"is {choices}, but {where[:300]} gives at most {most} choices")
        return None


def _check_int(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise _invalid(name, f"must be between {low} and {high} (got {value})")


def _output_name(name: str, wire: str) -> str:
    return _OUTPUT_NAMES.get(wire, name) if name == "max_completion_tokens" else name


def _invalid(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"`{param}` {reason} - at `$.{param}`", param=param)
