"""What a request costs: model prices from models.dev, the config's overrides, and the math.

Prices are USD per million tokens, keyed by our provider kind (the bundled `data/prices.json` is
written by `scripts/make_prices.py` with `snapshot_from_models_dev`). `Pricing` answers per
instance: `[cost.providers.<instance>]` first, then free kinds (Ollama), then the table. An
unknown price is `None`, never a guess. `prompt_tokens` includes cached tokens: cache reads bill
at `cache_read`, cache writes at `cache_write`, the rest (and any cache token without a known
cache price) at `input`. Output bills `max(completion_tokens, total_tokens - prompt_tokens)`: xAI
leaves reasoning out of `completion_tokens` (not out of `total_tokens`), OpenAI counts it in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import msgspec

from thanos_asgi.config import Config, ModelsDevConfig, ProviderCost
from thanos_asgi.governance.catalogue import MODELS_DEV_KINDS, Lookups
from thanos_asgi.providers import SPECS, effective_kind
from thanos_asgi.sanitize import decode as bounded_decode
from thanos_asgi.types import ChatRequest, Message, TextPart, Usage
from thanos_asgi.upstream import Timeouts, Transport

_COST_FIELDS = ("input", "output", "cache_read", "cache_write")
_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens; `None` cache prices mean "bill at `input`"."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


FREE = Price(0.0, 0.0, 0.0, 0.0)


# -- the table ---------------------------------------------------------------------------------


def _is_price(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


def _trim_model(model: Any) -> dict[str, float] | None:
    cost = model.get("cost") if isinstance(model, dict) else None
    if not isinstance(cost, dict) or not all(_is_price(cost.get(f)) for f in ("input", "output")):
        return None
    return {field: cost[field] for field in _COST_FIELDS if _is_price(cost.get(field))}


def snapshot_from_models_dev(data: Mapping[str, Any]) -> dict[str, Any]:
    """models.dev `api.json` trimmed to our kinds and the four prices, keys sorted. Models
    without an input and an output price are left out. `as_of` is the newest `last_updated`
    date in the whole document: the data is at least that fresh."""
    prices: dict[str, dict[str, dict[str, float]]] = {}
    dates: list[str] = []
    for provider_id, provider in data.items():
        models = provider.get("models") if isinstance(provider, dict) else None
        if not isinstance(models, dict):
            continue
        dates += [m["last_updated"] for m in models.values() if _is_date(m)]
        kind = MODELS_DEV_KINDS.get(provider_id)
        if kind is None:
            continue
        trimmed = {mid: cost for mid, m in models.items() if (cost := _trim_model(m)) is not None}
        prices[kind] = dict(sorted(trimmed.items()))
    return {  # keys in sorted order
        "as_of": max(dates, default=None),
        "prices": dict(sorted(prices.items())),
        "source": "https://models.dev/api.json",
        "units": "USD per 1M tokens",
    }


def _is_date(model: Any) -> bool:
    return isinstance(model, dict) and isinstance(model.get("last_updated"), str)


class PriceTable:
    """Model prices per provider kind, looked up leniently (`lookup`)."""

    def __init__(self, prices: Mapping[str, Mapping[str, Price]], as_of: str | None = None) -> None:
        self._prices = Lookups(prices)
        self.as_of = as_of

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> PriceTable:
        """From the shape `snapshot_from_models_dev` returns (and `prices.json` holds)."""
        prices = {
            kind: {
                model: Price(**{k: float(v) for k, v in c.items()}) for model, c in models.items()
            }
            for kind, models in snapshot["prices"].items()
        }
        return cls(prices, snapshot.get("as_of"))

    @classmethod
    def from_models_dev(cls, data: Mapping[str, Any]) -> PriceTable:
        return cls.from_snapshot(snapshot_from_models_dev(data))

    @classmethod
    def load_bundled(cls) -> PriceTable:
        raw = (resources.files("thanos_asgi.governance") / "data" / "prices.json").read_bytes()
        return cls.from_snapshot(bounded_decode(raw))

    def __len__(self) -> int:
        return sum(len(models) for models in self._prices.tables.values())

    def models(self, kind: str) -> list[str]:
        """The model ids the table knows for provider `kind` (its models.dev catalogue)."""
        return sorted(self._prices.tables.get(kind, ()))

    def lookup(self, kind: str, model: str) -> Price | None:
        """The exact id; else without a date suffix (`-20241022`, `-2024-07-18`, `@20241022`);
        else the longest known id that prefixes it at a `-`, `:` or `@` (`gpt-4o-mini-search`
        -> `gpt-4o-mini`, but `gpt-4.5-preview` does not become `gpt-4`); else None."""
        return self._prices.get(kind, model)


# -- the math ----------------------------------------------------------------------------------


def billed_output_tokens(usage: Usage) -> int:
    """Output tokens including reasoning, whichever way the provider counted it."""
    return usage.output_tokens


def cost_of(price: Price, usage: Usage) -> float:
    """USD for one request's usage at `price`."""
    prompt, details = usage.prompt_tokens, usage.prompt_tokens_details
    cached = min(usage.cached_tokens, prompt)
    written = min((details.cache_creation_tokens or 0) if details else 0, prompt - cached)
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    output = billed_output_tokens(usage) * price.output
    total = (prompt - cached - written) * price.input + cached * read + written * write + output
    return total / _PER_MILLION


class PriceSource(Protocol):
    def lookup(self, kind: str, model: str) -> Price | None: ...


_Prices = tuple[float | None, float | None, float | None, float | None]


@dataclass(frozen=True, slots=True)
class _Instance:
    kind: str
    flat: bool  # every request costs 0: `free`, or paid for by a subscription
    override: _Prices | None  # the config's per-token prices, if it gives any
    free_kind: bool


def _instance(name: str, config: Config) -> _Instance:
    provider = config.providers.get(name)
    kind = effective_kind(name, provider.kind if provider else None)
    spec = SPECS.get(kind)
    cost = config.cost.providers.get(name) or ProviderCost()
    prices = (
        cost.input_cost_per_1m_tokens,
        cost.output_cost_per_1m_tokens,
        cost.cache_read_cost_per_1m_tokens,
        cost.cache_write_cost_per_1m_tokens,
    )
    per_token = any(price is not None for price in prices)
    # `monthly_cost = 10` alone (complete-hybrid.toml's copilot) means a subscription
    implied = cost.pricing_model is None and cost.monthly_cost is not None and not per_token
    flat = cost.pricing_model in ("free", "subscription") or implied
    return _Instance(kind, flat, prices if per_token else None, bool(spec and spec.free))


def _merge(override: _Prices, base: Price | None) -> Price | None:
    """The override's prices, missing ones filled from the table's price for the model."""
    table = (base.input, base.output, base.cache_read, base.cache_write) if base else (None,) * 4
    input_, output, read, write = (
        mine if mine is not None else theirs for mine, theirs in zip(override, table, strict=True)
    )
    return None if input_ is None or output is None else Price(input_, output, read, write)


class Pricing:
    """Prices per configured instance: config overrides, then free kinds, then the table."""

    def __init__(self, config: Config, table: PriceSource) -> None:
        self._config = config
        self._table = table
        names = {*config.providers, *config.cost.providers}
        self._instances = {name: _instance(name, config) for name in names}

    def _of(self, instance: str) -> _Instance:
        return self._instances.get(instance) or _instance(instance, self._config)

    def price(self, instance: str, model: str) -> Price | None:
        spec = self._of(instance)
        if spec.flat:
            return FREE
        if spec.override is not None:
            return _merge(spec.override, self._table.lookup(spec.kind, model))
        return FREE if spec.free_kind else self._table.lookup(spec.kind, model)

    def cost(self, instance: str, model: str, usage: Usage) -> float | None:
        price = self.price(instance, model)
        return None if price is None else cost_of(price, usage)

    def worst_case(
        self, instance: str, model: str, prompt_tokens: int, max_output_tokens: int
    ) -> float | None:
        """An upper bound to reserve before the call: every prompt token at `input` (no cache
        discount), `max_output_tokens` at `output`. None when the price is unknown."""
        price = self.price(instance, model)
        if price is None:
            return None
        return (prompt_tokens * price.input + max_output_tokens * price.output) / _PER_MILLION

    def is_free(self, instance: str) -> bool:
        """True when no request on `instance` costs anything at the margin: `free`, a
        subscription (its fee is in `monthly_fixed`), or a free kind without token prices."""
        spec = self._of(instance)
        return spec.flat or (spec.free_kind and spec.override is None)

    def monthly_fixed(self) -> dict[str, float]:
        """Fixed monthly fees (subscriptions) by instance, USD."""
        return {
            name: cost.monthly_cost
            for name, cost in sorted(self._config.cost.providers.items())
            if cost.monthly_cost is not None and cost.pricing_model != "free"
        }


# -- refreshing from models.dev -----------------------------------------------------------------


async def refresh(table_url: str, transport: Transport) -> PriceTable | None:
    """A fresh table from models.dev, or None on any failure (network, status, bad JSON, or a
    document with no prices for our providers) so the caller keeps the table it has."""
    try:
        response = await transport.send(
            "GET", table_url, headers={"accept": "application/json"}, timeouts=Timeouts(total=60)
        )
        if response.status != 200:
            await response.aclose()
            return None
        data = bounded_decode(await response.read())
        table = PriceTable.from_models_dev(data) if isinstance(data, dict) else None
    except Exception:
        return None
    return table if table is not None and len(table) > 0 else None


class PriceBook:
    """The current table; `maybe_refresh` replaces it from models.dev at most once per
    `cache_ttl` seconds. A failed refresh keeps the table and waits another `cache_ttl`."""

    def __init__(
        self,
        table: PriceTable,
        *,
        url: str,
        cache_ttl: float,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._url, self._ttl, self._enabled, self._clock = url, cache_ttl, enabled, clock
        self._last_attempt: float | None = None

    @classmethod
    def from_config(
        cls, config: ModelsDevConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> PriceBook:
        """The bundled table, refreshed as `[models_dev]` says (never when not `enabled`)."""
        table, url, ttl = PriceTable.load_bundled(), config.url, config.cache_ttl
        return cls(table, url=url, cache_ttl=ttl, enabled=config.enabled, clock=clock)

    def lookup(self, kind: str, model: str) -> Price | None:
        return self.table.lookup(kind, model)

    def refresh_due(self) -> bool:
        last = self._last_attempt
        return self._enabled and (last is None or self._clock() - last >= self._ttl)

    async def maybe_refresh(self, transport: Transport) -> bool:
        """Refresh if due; True when the table was replaced."""
        if not self.refresh_due():
            return False
        self._last_attempt = self._clock()  # before the await: concurrent callers see not due
        fresh = await refresh(self._url, transport)
        if fresh is not None:
            self.table = fresh
        return fresh is not None


# -- estimating a prompt before sending it ------------------------------------------------------

_BYTES_PER_TOKEN = 4  # English text averages ~4 characters per token in BPE vocabularies
_PER_MESSAGE = 4  # role and framing tokens around each message
_PER_REQUEST = 3  # the tokens that prime the reply
_PER_ATTACHMENT = 1_000  # an image, audio or file part: flat and rough


def _size(text: str | None) -> int:
    if not text:
        return 0
    # UTF-8 bytes, so CJK text (1 char ~ 1 token) is not undercounted 4x; ASCII costs no copy
    return len(text) if text.isascii() else len(text.encode())


def _message_size(message: Message) -> tuple[int, int]:
    """UTF-8 size of a message's text, and how many non-text parts it has."""
    content = message.content
    parts = () if content is None or isinstance(content, str) else content
    texts = [message.name, message.reasoning_content, content if isinstance(content, str) else None]
    texts += [part.text for part in parts if isinstance(part, TextPart)]
    texts += [
        text for c in message.tool_calls or () for text in (c.function.name, c.function.arguments)
    ]
    return sum(map(_size, texts)), sum(not isinstance(part, TextPart) for part in parts)


def estimate_prompt_tokens(request: ChatRequest, bytes_per_token: int = _BYTES_PER_TOKEN) -> int:
    """A cheap estimate of a request's prompt tokens, for token-per-minute limits.

    ~4 bytes of UTF-8 per token over message text, tool calls and the JSON of tool definitions
    and response schemas, plus 4 tokens per message, 3 per request, and a flat 1,000 per
    image/audio/file part. Not a tokenizer: it can be off by tens of percent either way.
    With `bytes_per_token=1` it bounds the text's tokens from above (`prompt_token_bound`).
    """
    size = attachments = 0
    for message in request.messages:
        message_size, message_attachments = _message_size(message)
        size += message_size
        attachments += message_attachments
    if request.tools:
        size += len(msgspec.json.encode(request.tools))
    if request.response_format is not None and request.response_format.json_schema is not None:
        size += len(msgspec.json.encode(request.response_format.json_schema))
    text_tokens = -(-size // bytes_per_token)  # rounded up
    framing = _PER_MESSAGE * len(request.messages) + _PER_REQUEST
    return text_tokens + framing + _PER_ATTACHMENT * attachments


def prompt_token_bound(request: ChatRequest) -> int:
    """At least as many tokens as the prompt's text can be, for budget reservations: every
    token of the tokenizers in use (byte-level BPE, SentencePiece with byte fallback) is at
    least one byte of UTF-8, so a prompt written to tokenise densely cannot outgrow its
    reservation. Attachments stay at the flat estimate: their size is not known before."""
    return estimate_prompt_tokens(request, 1)
