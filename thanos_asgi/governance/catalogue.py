"""What models.dev says about a model besides its price: how many output tokens it can write.

The bundled `data/limits.json` is written by `scripts/make_limits.py` with
`limits_from_models_dev`: per provider kind (as in `pricing.MODELS_DEV_KINDS`), per model, its
`limit.output` in tokens. `output_limit` looks a model up leniently (`lookup`: exact id, then
without a date suffix, then the longest known prefix); `known` only by exact id, for callers
that must not let clients invent new names (metrics labels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["MODELS_DEV_KINDS", "Catalogue", "Lookups", "limits_from_models_dev", "lookup"]

V = TypeVar("V")
_DATE_SUFFIX = re.compile(r"[-@](?:\d{8}|\d{4}-\d{2}-\d{2})$")
_PREFIX_BOUNDARY = frozenset("-:@")
MEMO = 4096  # answers `Lookups` remembers
_UNSEEN = object()
# models.dev provider ids we route to -> our provider kinds
MODELS_DEV_KINDS: Mapping[str, str] = MappingProxyType(
    {
        **{same: same for same in ("anthropic", "deepseek", "groq", "openai", "openrouter", "xai")},
        **{"github-copilot": "copilot", "google": "gemini", "google-vertex": "vertex"},
    }
)


def lookup(models: Mapping[str, V], model: str) -> V | None:
    """The exact id; else without a date suffix (`-20241022`, `-2024-07-18`, `@20241022`);
    else the longest known id that prefixes it at a `-`, `:` or `@` (`gpt-4o-mini-search`
    -> `gpt-4o-mini`, but `gpt-4.5-preview` does not become `gpt-4`); else None."""
    if not models:
        return None
    for candidate in dict.fromkeys((model, model.lower())):
        found = models.get(candidate)
        if found is None:
            stripped = _DATE_SUFFIX.sub("", candidate)
            found = models.get(stripped)
            if found is None:
                found = _by_prefix(models, stripped)
        if found is not None:
            return found
    return None


class Lookups(Generic[V]):
    """`lookup` in {kind: {model: V}}, each answer remembered per (kind, model): a model the
    table does not know exactly (a local model, a new or dated id) costs a scan of every id
    of its kind, 5-15 µs, on every request that prices or bounds it. At most `MEMO` answers
    are kept (a client may name models at will on a pass-through): when full, it starts over."""

    __slots__ = ("_memo", "tables")

    def __init__(self, tables: Mapping[str, Mapping[str, V]]) -> None:
        self.tables = {kind: dict(models) for kind, models in tables.items()}
        self._memo: dict[tuple[str, str], V | None] = {}

    def get(self, kind: str, model: str) -> V | None:
        key = (kind, model)
        found = self._memo.get(key, _UNSEEN)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        answer = lookup(self.tables.get(kind) or {}, model)
        if len(self._memo) >= MEMO:
            self._memo.clear()
        self._memo[key] = answer
        return answer


def _by_prefix(models: Mapping[str, V], model: str) -> V | None:
    best = ""
    for known in models:
        if (
            len(best) < len(known) < len(model)
            and model[len(known)] in _PREFIX_BOUNDARY
            and model.startswith(known)
        ):
            best = known
    return models[best] if best else None


def limits_from_models_dev(data: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """models.dev `api.json` -> {kind: {model: output token limit}}, keys sorted."""
    limits: dict[str, dict[str, int]] = {}
    for provider_id, kind in sorted(MODELS_DEV_KINDS.items(), key=lambda item: item[1]):
        provider = data.get(provider_id)
        models = provider.get("models") if isinstance(provider, dict) else None
        if not isinstance(models, dict):
            continue
        found = {mid: out for mid, m in models.items() if (out := _output(m)) is not None}
        limits[kind] = dict(sorted(found.items()))
    return limits


def _output(model: Any) -> int | None:
    limit = model.get("limit") if isinstance(model, dict) else None
    value = limit.get("output") if isinstance(limit, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class Catalogue:
    """Output-token limits per provider kind, from the bundled models.dev snapshot."""

    def __init__(self, limits: Mapping[str, Mapping[str, int]]) -> None:
        self._limits = Lookups(limits)

    @classmethod
    def load_bundled(cls) -> Catalogue:
        raw = (resources.files("thanos_asgi.governance") / "data" / "limits.json").read_bytes()
        return cls(msgspec.json.decode(raw, type=dict[str, dict[str, int]]))

    def output_limit(self, kind: str, model: str) -> int | None:
        """The most output tokens `model` of `kind` can write, or None when unknown."""
        return self._limits.get(kind, model)

    def known(self, kind: str, model: str) -> bool:
        """True when `model` is a catalogue id of `kind` exactly."""
        return model in self._limits.tables.get(kind, ())
