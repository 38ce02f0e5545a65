"""Model names to ordered provider candidates (DESIGN section 5).

Resolution order for a requested name: alias, `auto` (the primary provider's default model,
then the others'), a bare instance name (its default model), `instance/model`, a model an
instance lists in its config, and a known prefix of a provider kind (`claude-*`, `gpt-*`,
`name:tag` -> Ollama). The tables are built once per config.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import ModelNotFound
from thanos_asgi.providers import SPECS, effective_kind
from thanos_asgi.sanitize import echo
from thanos_asgi.types import Target as Target

if TYPE_CHECKING:
    from thanos_asgi.config import Config, ProviderConfig

MAX_ALIAS_DEPTH = 8


class Router:
    def __init__(self, config: Config) -> None:
        enabled = [p for p in config.providers.values() if p.enabled]
        order = {name: i for i, name in enumerate(config.fallback_chain())}
        enabled.sort(key=lambda p: order.get(p.name, len(order)))  # stable: file order after
        self.instances = [p.name for p in enabled]
        self.disabled = {p.name for p in config.providers.values() if not p.enabled}
        self.aliases = dict(config.routing.aliases)
        self.defaults = {p.name: _default_model(p) for p in enabled}
        self.primary = config.primary_provider()
        self.by_model: dict[str, list[str]] = {}
        for p in enabled:
            for model in filter(None, [p.model, *p.models]):
                self.by_model.setdefault(model, []).append(p.name)
        self.by_kind: dict[str, list[str]] = {}
        for p in enabled:
            self.by_kind.setdefault(effective_kind(p.name, p.kind), []).append(p.name)
        self._named: dict[str, frozenset[str]] = {}
        self.prefixes = sorted(
            ((prefix, kind) for kind, spec in SPECS.items() for prefix in spec.model_prefixes),
            key=lambda item: -len(item[0]),
        )

    def resolve(self, name: str) -> list[Target]:
        """Ordered candidates for a requested model name; ModelNotFound if there are none."""
        seen = 0
        while name in self.aliases and seen < MAX_ALIAS_DEPTH:
            name, seen = self.aliases[name], seen + 1
        targets = self._lookup(name)
        if not targets:
            raise ModelNotFound(self._explain(name))
        return targets

    def _lookup(self, name: str) -> list[Target]:
        if name == "auto":
            return self._auto()
        if self.defaults.get(name):
            return [Target(name, self.defaults[name] or "")]  # an instance: its default model
        instance, slash, model = name.partition("/")
        if slash and instance in self.defaults and model:
            return [Target(instance, model)]
        if name in self.by_model:
            return [Target(i, name) for i in self.by_model[name]]
        kind = self._kind_for(name)
        if kind is None:
            return []
        return [Target(i, name) for i in self.by_kind.get(kind, ())]

    def _kind_for(self, name: str) -> str | None:
        for prefix, kind in self.prefixes:
            if name.startswith(prefix):
                return kind
        if ":" in name and "/" not in name:
            return "ollama"  # name:tag
        return None

    def _auto(self) -> list[Target]:
        candidates = [self.primary] if self.primary else []
        candidates += [i for i in self.instances if i != self.primary]
        return [Target(i, model) for i in candidates if (model := self.defaults.get(i))]

    def _explain(self, name: str) -> str:
        instance = name.partition("/")[0]
        if instance in self.disabled:
            return f"provider {echo(instance)} is disabled in the config (enabled = false)"
        if name == "auto":
            return "'auto' needs a provider with a default model (set `model` in its config)"
        return (
            f"the model {echo(name)} is not served here. Name a model as '<instance>/<model>' "
            f"(instances: {_names(self.instances)}), use an alias ({_names(self.aliases)}), "
            "a known prefix (claude-*, gpt-*, gemini-*, grok-*, deepseek-*), "
            "'name:tag' for Ollama, or 'auto'; GET /v1/models lists what is configured"
        )

    def models_of(self, instance: str) -> frozenset[str]:
        """Every model the config names for `instance`: default, `models`, alias targets."""
        found = self._named.get(instance)
        if found is None:
            names = {m for m, owners in self.by_model.items() if instance in owners}
            names.add(self.defaults.get(instance) or "")
            names.update(
                target.partition("/")[2]
                for target in self.aliases.values()
                if target.partition("/")[0] == instance
            )
            found = self._named[instance] = frozenset(names - {""})
        return found

    def configured_models(self) -> list[tuple[str, str]]:
        """(model id, instance) for every model and alias the config names."""
        out = [(f"{p}/{m}", p) for m, owners in self.by_model.items() for p in owners]
        out += [(alias, target.partition("/")[0]) for alias, target in self.aliases.items()]
        return out


def _default_model(provider: ProviderConfig) -> str | None:
    """The instance's `model`, else the first of its `models`, else its kind's usual one."""
    spec = SPECS.get(effective_kind(provider.name, provider.kind))
    fallback = spec.default_model if spec else None
    return provider.model or next(iter(provider.models), None) or fallback


def _names(items: Iterable[str]) -> str:
    names = list(items)
    return ", ".join(names) if names else "none"
