"""The config `thanos serve` runs when there is no config file: what the environment holds.

Ollama (at `OLLAMA_HOST`, else localhost) and one instance per provider kind whose standard
key variable is set (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ...). Each gets its kind's default
model, and the base URL its official SDK would read (`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`,
`GROQ_BASE_URL`), with the key variable named so the key goes there too. Nothing here reads
`os.environ`: the caller passes the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from thanos_asgi.providers import SPECS, ProviderSpec

__all__ = ["DEFAULTS_SOURCE", "default_tables"]

DEFAULTS_SOURCE = "<defaults>"


def default_tables(env: Mapping[str, str]) -> dict[str, Any]:
    """The `[providers]` tables of the config with no file, as TOML would give them."""
    ollama: dict[str, Any] = {"base_url": _ollama_url(env.get("OLLAMA_HOST", ""))}
    if env.get("OLLAMA_API_KEY"):
        ollama["api_key_env"] = "OLLAMA_API_KEY"
    providers: dict[str, Any] = {"ollama": ollama}
    for spec in SPECS.values():
        variable = next((name for name in spec.env_keys if env.get(name)), None)
        if spec.kind != "ollama" and variable is not None:
            providers[spec.kind] = _from_environment(spec, variable, env)
    return {"providers": providers}


def _from_environment(spec: ProviderSpec, variable: str, env: Mapping[str, str]) -> dict[str, Any]:
    table: dict[str, Any] = {"api_key_env": variable}
    if spec.default_model:
        table["model"] = spec.default_model
    base_url = env.get(spec.base_url_env) if spec.base_url_env else None
    if base_url:
        table["base_url"] = base_url
    return table


def _ollama_url(host: str) -> str:
    """`OLLAMA_HOST` as a URL: `myhost` -> `http://myhost:11434`; unset -> localhost."""
    parts = urlsplit(host if "://" in host else f"http://{host or 'localhost'}")
    if parts.scheme == "http" and not re.search(r":\d*$", parts.netloc):
        parts = parts._replace(netloc=f"{parts.netloc}:11434")
    return parts.geturl()
