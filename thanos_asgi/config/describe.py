"""The config as people read it: `thanos check`'s summary and the dump with every secret
masked (also the admin API's `GET /admin/config`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from thanos_asgi.config.schema import Config, ProviderConfig


def mask(secret: str) -> str:
    """Never more than the last four characters: `"****7890"`, or `"****"` for short ones."""
    return "****" + secret[-4:] if len(secret) > 12 else "****"


def mask_url(url: str) -> str:
    """A URL with any password in it masked (`redis://:****@host`); other URLs unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{mask(password)}@{hostinfo}"))


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("auth", "key", "token", "secret", "cookie"))


def _mask_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_tree(item) for item in value]
    return mask_url(value) if isinstance(value, str) and "@" in value else value


def redacted(config: Config) -> dict[str, Any]:
    """The resolved config as plain data for printing, every secret masked."""
    data: dict[str, Any] = _mask_tree(msgspec.to_builtins(config))
    for provider in data.get("providers", {}).values():
        if provider.get("api_key"):
            provider["api_key"] = mask(provider["api_key"])
        for credential in provider.get("credentials", []):
            credential["api_key"] = mask(credential["api_key"])
        headers = provider.get("headers", {})
        for name, value in headers.items():
            headers[name] = mask(value) if _is_secret_header(name) else value
    for key in data.get("server", {}).get("keys", []):
        for field in ("key", "key_hash"):
            if key.get(field):
                key[field] = mask(key[field])
    return data


def _key_status(provider: ProviderConfig) -> str:
    if provider.credentials:
        ids = ", ".join(credential.id for credential in provider.credentials)
        return f"pool of {len(provider.credentials)} ({ids}; {provider.credential_strategy})"
    if provider.credential:
        return f"set ({mask(provider.credential)})"
    if provider.auth_method == "oauth" or provider.use_github_auth:
        return "oauth"
    spec = provider.spec
    if spec is None or not spec.needs_key:
        return "not needed"
    variable = provider.api_key_env or (spec.env_keys[0] if spec.env_keys else "")
    return f"missing (set {variable})" if variable else "missing"


def _describe_provider(provider: ProviderConfig) -> str:
    url = provider.effective_base_url
    return (
        f"  {provider.name}: kind {provider.kind}, "
        f"{'enabled' if provider.enabled else 'disabled'}, "
        f"base_url {mask_url(url) if url else '(adapter default)'}, "
        f"model {provider.model or '(none)'}, key {_key_status(provider)}"
    )


def describe(config: Config, *, stored_keys: int | None = None) -> str:
    """Human-readable summary for `thanos check`; secrets masked. `stored_keys`: how many
    active keys the key store (`server.key_store`) holds, when there is one."""
    server = config.server
    keys = f"{len(server.keys)} client keys"
    if stored_keys is not None:
        keys = f"{len(server.keys) + stored_keys} client keys ({len(server.keys)} in the config, "
        keys += f"{stored_keys} in {server.key_store})"
    lines = [
        f"config: {config.source or '(not from a file)'}",
        f"server: http {server.bind}, grpc {server.grpc or 'off'}, {keys}",
        f"ai: mode {config.ai.mode or '(none)'}, primary {config.ai.primary_provider or 'auto'}"
        f" -> {config.primary_provider() or '(no enabled provider)'}",
        f"routing: strategy {config.routing.strategy}",
        f"  fallback chain: {' -> '.join(config.fallback_chain()) or '(none)'}",
    ]
    skipped = [
        name
        for name in config.routing.fallback_chain or config.ai.fallback_chain
        if name not in config.providers
    ]
    if skipped:
        lines.append(f"  not configured, skipped: {', '.join(skipped)}")
    lines += [f"  alias {name} -> {target}" for name, target in config.routing.aliases.items()]
    lines += [f"  mode {name}: {', '.join(table)}" for name, table in config.routing.modes.items()]
    lines.append(f"providers ({len(config.providers)}):")
    lines += [_describe_provider(provider) for provider in config.providers.values()]
    return "\n".join(lines)
