"""What `thanos serve` says when it starts: where the config came from, what it serves, where.

    config: no file found (looked for ./thanos.toml, ~/.config/thanos/config.toml, ...)
    providers: openai (key from OPENAI_API_KEY, https://api.openai.com/v1, 47 models), ...
    models: 47 configured; 'auto' -> openai/gpt-4o-mini
    listening: http://127.0.0.1:8080, gRPC off
    client keys: none; anyone who can reach 127.0.0.1:8080 may use it

A config with no file gets its providers' catalogue models from the bundled models.dev data
(`with_catalogue`), so that `/v1/models` and `auto` work on a first run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec

from thanos_asgi.config.defaults import DEFAULTS_SOURCE
from thanos_asgi.exceptions import ModelNotFound

if TYPE_CHECKING:
    from thanos_asgi.config import Config, ProviderConfig
    from thanos_asgi.core.routing import Router

__all__ = ["banner", "count_keys", "self_loops", "with_catalogue"]


def with_catalogue(config: Config) -> Config:
    """The config with no file, each provider listing its kind's models from models.dev."""
    if config.source != DEFAULTS_SOURCE:
        return config
    from thanos_asgi.governance.pricing import PriceTable

    table = PriceTable.load_bundled()
    providers = {
        name: p if p.models else msgspec.structs.replace(p, models=table.models(p.kind or ""))
        for name, p in config.providers.items()
    }
    return msgspec.structs.replace(config, providers=providers)


def banner(
    config: Config,
    router: Router,
    *,
    looked_in: list[Path],
    urls: list[str],
    client_keys: int,
) -> list[str]:
    """The startup lines; `urls` are where it listens, `client_keys` how many keys are active."""
    served = list(dict.fromkeys(router.configured_models()))  # a model may be named twice
    counts: dict[str, int] = {}
    for _, owner in served:
        counts[owner] = counts.get(owner, 0) + 1
    providers = [_provider(p, counts.get(p.name, 0)) for p in config.enabled_providers()]
    try:
        auto = router.resolve("auto")[0]
        first = f"{auto.instance}/{auto.model}"
    except ModelNotFound:
        first = "(no provider has a default model)"
    return [
        f"config: {_source(config, looked_in)}",
        f"providers: {', '.join(providers) or 'none'}",
        f"models: {len(served)} configured; 'auto' -> {first}",
        f"listening: {', '.join(urls)}",
        f"client keys: {_keys(client_keys, urls)}",
    ]


def self_loops(config: Config, bind: tuple[str, int]) -> list[str]:
    """Warnings for providers whose base URL is this gateway's own address (an
    `OPENAI_BASE_URL` exported for clients, say): their requests would come back here."""
    host, port = bind
    warnings = []
    for provider in config.enabled_providers():
        url = urlsplit(provider.effective_base_url or "")
        try:
            target = (url.hostname, url.port or {"http": 80, "https": 443}.get(url.scheme))
        except ValueError:
            continue
        if target[1] == port and _same_host(target[0] or "", host):
            warnings.append(
                f"provider {provider.name} points at this gateway's own address "
                f"({provider.effective_base_url}): its requests would come back here"
            )
    return warnings


def _same_host(target: str, bind: str) -> bool:
    local = ("localhost", "127.0.0.1", "::1")
    return target == bind or bind in ("0.0.0.0", "::") or (target in local and bind in local)


def _source(config: Config, looked_in: list[Path]) -> str:
    if config.source != DEFAULTS_SOURCE:
        return config.source
    places = ", ".join(str(path) for path in looked_in)
    return (
        f"no file found (looked for {places}); serving the providers whose key variables are "
        "set; `thanos init` writes a starter config"
    )


def _provider(provider: ProviderConfig, models: int) -> str:
    url = provider.effective_base_url or "adapter default"
    spec = provider.spec
    if provider.api_key_env and provider.credential:
        key = f"key from {provider.api_key_env}"
    elif provider.credential:
        key = "key set"
    elif provider.auth_method == "oauth" or provider.use_github_auth:
        key = "oauth login"
    else:
        key = "no key" if spec is None or spec.needs_key else "no key needed"
    listed = f"{models} models" if models else "models listed live"
    return f"{provider.name} ({key}, {url}, {listed})"


def _keys(count: int, urls: list[str]) -> str:
    if count:
        return f"{count} active; every request needs one"
    return f"none; anyone who can reach {urls[0]} may use it (`thanos keys create` makes one)"


def count_keys(config: Config) -> int:
    """Active client keys: `[[server.keys]]` and the unrevoked ones of the key store."""
    count = len(config.server.keys)
    store = config.server.key_store
    if store and Path(store).exists():
        from thanos_asgi.governance.keys import KeyStore

        count += sum(1 for row in KeyStore(store).listing() if not row["revoked"])
    return count
