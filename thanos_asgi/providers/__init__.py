"""The provider registry: what each kind is, as data, with its adapter as a lazy import string.

Config, routing and the CLI read these facts; only `load_adapter` imports adapter code, and only
for the kinds a config actually uses (uvicorn's `HTTP_PROTOCOLS` + `importer.py` pattern).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProviderSpec:
    kind: str
    adapter: str  # "module:Class"; "" while the kind has no adapter in this build
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

SPECS: dict[str, ProviderSpec] = {
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
    )
}

KIND_BY_NAME: dict[str, str] = {name: spec.kind for spec in SPECS.values() for name in spec.names}


def infer_kind(instance_name: str) -> str | None:
    """The kind an instance name implies (`claude` -> `anthropic`), or None."""
    return KIND_BY_NAME.get(instance_name.lower())


def load_adapter(kind: str) -> Any:
    """Import and return the adapter class for `kind`; LookupError if this build has none."""
    spec = SPECS.get(kind)
    if spec is None or not spec.adapter:
        raise LookupError(kind)
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
