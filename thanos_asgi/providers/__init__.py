"""The provider registry: what each kind is, as data, with its adapter as a lazy import string.

Config, routing and the CLI read these facts; only `load_adapter` imports adapter code, and only
for the kinds a config actually uses (uvicorn's `HTTP_PROTOCOLS` + `importer.py` pattern).

Add a kind of your own with `register_kind` (before the config that names it is loaded); the
adapter it names implements `thanos_asgi.providers.base.Provider`, usually by subclassing
`HTTPProvider`:

    register_kind("acme", "acme_ai.gateway:AcmeProvider", base_url="https://api.acme.test/v1",
                  env_keys=("ACME_API_KEY",), default_model="acme-1")

    # thanos.toml:  [providers.acme]  kind = "acme"   (or any name, with kind = "acme")

`SPECS` is a read-only view of the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "KIND_BY_NAME",
    "SPECS",
    "ProviderSpec",
    "effective_kind",
    "infer_kind",
    "load_adapter",
    "register_kind",
    "unregister_kind",
]

AdapterFactory = Callable[..., Any]
"""Called as `factory(config, spec=spec, transport=transport)`; returns a `Provider`."""


@dataclass(frozen=True)
class ProviderSpec:
    """The facts of one provider kind (see `register_kind` for what each field means)."""

    kind: str
    adapter: str | AdapterFactory  # "module:Class" (imported on first use) or the class itself
    names: tuple[str, ...] = ()  # instance names that infer this kind
    env_keys: tuple[str, ...] = ()  # standard environment variables holding its API key
    base_url: str = ""
    model_prefixes: tuple[str, ...] = ()  # bare model names these prefixes route to this kind
    needs_key: bool = True
    free: bool = False  # local models cost nothing
    default_model: str | None = None  # used when an instance names no model of its own
    max_choices: int = 1  # the most choices (`n`) one request may ask for
    base_url_env: str = ""  # the variable its official SDK reads a base URL from
    extra: dict[str, Any] = field(default_factory=dict)


_OPENAI_BASE = "thanos_asgi.providers.openai_compat:OpenAICompatible"

_BUILTIN: dict[str, ProviderSpec] = {
    spec.kind: spec
    for spec in (
        ProviderSpec(
            "openai",
            "thanos_asgi.providers.openai:OpenAI",
            max_choices=128,  # OpenAI's documented maximum for `n`
            default_model="gpt-4o-mini",
            names=("openai", "gpt4", "gpt"),
            env_keys=("OPENAI_API_KEY",),
            base_url="https://api.openai.com/v1",
            base_url_env="OPENAI_BASE_URL",
            model_prefixes=("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-"),
        ),
        ProviderSpec(
            "xai",
            "thanos_asgi.providers.xai:XAI",
            max_choices=128,
            default_model="grok-3-mini",
            names=("xai", "grok"),
            env_keys=("XAI_API_KEY",),
            base_url="https://api.x.ai/v1",
            model_prefixes=("grok-",),
        ),
        ProviderSpec(
            "deepseek",
            "thanos_asgi.providers.deepseek:DeepSeek",
            default_model="deepseek-chat",
            names=("deepseek",),
            env_keys=("DEEPSEEK_API_KEY",),
            base_url="https://api.deepseek.com",
            model_prefixes=("deepseek-",),
        ),
        ProviderSpec(
            "groq",
            "thanos_asgi.providers.groq:Groq",
            names=("groq",),
            env_keys=("GROQ_API_KEY",),
            base_url="https://api.groq.com/openai/v1",
            base_url_env="GROQ_BASE_URL",
        ),
        ProviderSpec(
            "openrouter",
            "thanos_asgi.providers.openrouter:OpenRouter",
            names=("openrouter",),
            env_keys=("OPENROUTER_API_KEY",),
            base_url="https://openrouter.ai/api/v1",
        ),
        ProviderSpec("openai-compatible", _OPENAI_BASE, needs_key=False, max_choices=128),
        ProviderSpec(
            "ollama",
            "thanos_asgi.providers.ollama:Ollama",
            names=("ollama",),
            env_keys=("OLLAMA_API_KEY",),
            base_url="http://localhost:11434",
            model_prefixes=("ollama-",),
            needs_key=False,
            free=True,
        ),
        ProviderSpec(
            "anthropic",
            "thanos_asgi.providers.anthropic:Anthropic",
            default_model="claude-sonnet-4-5",
            names=("anthropic", "anthropic_max", "claude"),
            env_keys=("ANTHROPIC_API_KEY",),
            base_url="https://api.anthropic.com",
            base_url_env="ANTHROPIC_BASE_URL",
            model_prefixes=("claude-",),
        ),
        ProviderSpec(
            "gemini",
            "thanos_asgi.providers.gemini:Gemini",
            max_choices=8,  # candidateCount
            default_model="gemini-2.5-flash",
            names=("gemini", "google"),
            env_keys=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            base_url="https://generativelanguage.googleapis.com/v1beta",
            model_prefixes=("gemini-", "text-embedding-004", "gemini-embedding-"),
        ),
        ProviderSpec(
            "vertex",
            "thanos_asgi.providers.vertex:Vertex",
            names=("vertex",),
            needs_key=False,
            max_choices=8,  # candidateCount, as Gemini
        ),
        ProviderSpec(
            "copilot",
            "thanos_asgi.providers.copilot:Copilot",
            default_model="gpt-4o",
            names=("github_copilot", "copilot"),
            base_url="https://api.githubcopilot.com",
            needs_key=False,
        ),
        ProviderSpec(
            "omen",
            "thanos_asgi.providers.omen:Omen",
            names=("omen",),
            default_model="auto",
            base_url="http://localhost:3000",
            needs_key=False,
        ),
        ProviderSpec(
            "claude_cli",
            "thanos_asgi.providers.claude_cli:ClaudeCLI",
            names=("claude_cli",),
            default_model="default",
            needs_key=False,
        ),
        ProviderSpec(  # scripted answers for tests, without network (`thanos_asgi.testing`)
            "fake",
            "thanos_asgi.testing.fake:FakeProvider",
            base_url="http://fake.invalid/v1",
            default_model="echo",
            needs_key=False,
            free=True,
        ),
    )
}
_specs: dict[str, ProviderSpec] = dict(_BUILTIN)
_kind_by_name: dict[str, str] = {n: spec.kind for spec in _specs.values() for n in spec.names}

SPECS: Mapping[str, ProviderSpec] = MappingProxyType(_specs)
"""Every known kind, built-in and registered; read-only (`register_kind` adds to it)."""
KIND_BY_NAME: Mapping[str, str] = MappingProxyType(_kind_by_name)
"""Instance names that imply a kind (`claude` -> `anthropic`); read-only."""


def register_kind(
    kind: str,
    adapter: str | AdapterFactory,
    *,
    names: tuple[str, ...] = (),
    env_keys: tuple[str, ...] = (),
    base_url: str = "",
    default_model: str | None = None,
    model_prefixes: tuple[str, ...] = (),
    needs_key: bool = True,
    free: bool = False,
    replace: bool = False,
) -> ProviderSpec:
    """Make `kind = "<kind>"` usable in configs; returns the registered spec.

    - `adapter`: the adapter class (or any factory called as `adapter(config, spec=...,
      transport=...)`), or `"module:Class"` to import it only when a config uses the kind.
    - `names`: instance names that imply this kind without `kind = ...` (`[providers.acme]`).
    - `env_keys`: environment variables holding its API key, tried in order when an instance
      sets no `api_key`; with no config file at all, a set variable enables the kind.
    - `base_url`, `default_model`: used when an instance sets none.
    - `model_prefixes`: bare model names (`acme-1`) starting with these route to this kind.
    - `needs_key`: whether calls without a key are refused up front; `free`: costs nothing.

    A kind or instance name already taken is a ValueError, unless `replace=True` (built-in
    kinds can never be replaced). Registration is process-wide: do it once, at import time of
    the module that defines the adapter, or in your app's startup before loading the config.
    """
    _check_new_kind(kind, adapter, names, replace=replace)
    spec = ProviderSpec(
        kind,
        adapter,
        names=tuple(name.lower() for name in names),
        env_keys=tuple(env_keys),
        base_url=base_url,
        model_prefixes=tuple(model_prefixes),
        needs_key=needs_key,
        free=free,
        default_model=default_model,
    )
    if kind in _specs:
        unregister_kind(kind)
    _specs[kind] = spec
    _kind_by_name.update(dict.fromkeys(spec.names, kind))
    return spec


def _check_new_kind(
    kind: str, adapter: str | AdapterFactory, names: tuple[str, ...], *, replace: bool
) -> None:
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError(f"a provider kind is a non-empty string, not {kind!r}")
    if kind in _BUILTIN:
        raise ValueError(f"kind {kind!r} is built in and cannot be replaced")
    if kind in _specs and not replace:
        raise ValueError(f"kind {kind!r} is already registered (pass replace=True to replace it)")
    for name in names:
        owner = _kind_by_name.get(name.lower(), kind)
        if owner != kind:
            raise ValueError(f"instance name {name!r} already implies kind {owner!r}")
    if isinstance(adapter, str) and adapter.count(":") != 1:
        raise ValueError(f"adapter must be a class or a 'module:Class' string, not {adapter!r}")
    if not isinstance(adapter, str) and not callable(adapter):
        raise ValueError(f"adapter must be a class or a 'module:Class' string, not {adapter!r}")


def unregister_kind(kind: str) -> None:
    """Forget a kind `register_kind` added (tests use it to clean up); built-ins stay."""
    if kind in _BUILTIN:
        raise ValueError(f"kind {kind!r} is built in and cannot be removed")
    spec = _specs.pop(kind, None)
    for name in spec.names if spec else ():
        _kind_by_name.pop(name, None)


def infer_kind(instance_name: str) -> str | None:
    """The kind an instance name implies (`claude` -> `anthropic`), or None."""
    return KIND_BY_NAME.get(instance_name.lower())


def load_adapter(kind: str) -> Any:
    """Import and return the adapter class for `kind`; LookupError if this build has none."""
    spec = SPECS.get(kind)
    if spec is None or not spec.adapter:
        raise LookupError(kind)
    if not isinstance(spec.adapter, str):
        return spec.adapter
    module_name, _, attr = spec.adapter.partition(":")
    return getattr(importlib.import_module(module_name), attr)


_OPENAI_PRESETS = frozenset({"openai", "xai", "deepseek", "groq", "openrouter"})


def effective_kind(instance_name: str, kind: str | None) -> str:
    """The kind to build: `kind = "openai-compatible"` on a preset's name uses that preset."""
    inferred = infer_kind(instance_name)
    if kind is None:
        return inferred or "openai-compatible"
    if kind == "openai-compatible" and inferred in _OPENAI_PRESETS:
        return inferred
    return kind
