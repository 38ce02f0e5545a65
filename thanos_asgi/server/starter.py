"""`thanos init`: a commented starter config, never written over an existing file.

Providers whose key variable is set in the environment are switched on; the others are there,
commented out, to switch on by removing the `#`. Keys stay in the environment (`${VAR}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from thanos_asgi.providers import SPECS

__all__ = ["starter_config", "write_starter"]

_HEAD = """\
# thanos-asgi config. `thanos check` shows what it resolves to; `thanos serve` runs it.
# Secrets stay in the environment: write ${VAR} (or ${VAR:-default}), not the key itself.

[server]
bind = "127.0.0.1:8080"          # loopback; another address needs client keys (below)
# grpc = "127.0.0.1:50051"       # gRPC beside HTTP (pip install 'thanos-asgi[grpc]')
# tls_cert = "/etc/thanos/cert.pem"   # HTTPS, and gRPC over TLS, with this PEM pair
# tls_key = "/etc/thanos/key.pem"
# watch_config = true            # reload when this file's content changes (also: SIGHUP)

# Client keys: once one exists, every request needs one (`thanos keys create` stores more).
# [[server.keys]]
# id = "me"
# key = "${THANOS_KEY}"

[routing]
strategy = "fallback"            # try the chain in order until one answers
fallback_chain = [{chain}]
"""

# (instance, its key variable, its default model), from the provider registry
_PROVIDERS = tuple(
    (kind, SPECS[kind].env_keys[0], SPECS[kind].default_model or "")
    for kind in ("openai", "anthropic", "gemini", "xai", "deepseek")
)

_OLLAMA = """
[providers.ollama]               # local models; `ollama pull llama3.2` first
base_url = "http://localhost:11434"
model = "llama3.2"
"""


def starter_config(env: Mapping[str, str]) -> str:
    """The starter file's text; providers with a key in `env` are switched on."""
    on = [name for name, variable, _ in _PROVIDERS if env.get(variable)]
    parts = [_HEAD.replace("{chain}", ", ".join(f'"{n}"' for n in [*on, "ollama"]))]
    for name, variable, model in _PROVIDERS:
        table = f'[providers.{name}]\napi_key = "${{{variable}}}"\nmodel = "{model}"\n'
        if name not in on:
            table = "".join(f"# {line}\n" for line in table.splitlines())
        parts.append(f"\n{table}")
    parts.append(_OLLAMA)
    return "".join(parts)


def write_starter(path: Path, env: Mapping[str, str]) -> bool:
    """Write the starter config to `path`; False (nothing written) if `path` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(starter_config(env))
    except FileExistsError:
        return False
    return True
