"""Secrets written into a config file as they are, rather than as `${VAR}`.

Such a file is accepted, but `literal_secrets` names the keys (never the values), so the
loader can warn: a file is easily shared, committed or left readable.
"""

from __future__ import annotations

from typing import Any

__all__ = ["literal_secrets"]

_SECRET_WORDS = ("auth", "key", "token", "secret", "cookie")


def literal_secrets(raw: dict[str, Any]) -> list[str]:
    """Key paths (`providers.openai.api_key`) whose value is a literal secret."""
    found: list[str] = []
    providers = raw.get("providers")
    for name, table in (providers if isinstance(providers, dict) else {}).items():
        if not isinstance(table, dict):
            continue
        if _literal(table.get("api_key")):
            found.append(f"providers.{name}.api_key")
        keys = table.get("api_key")
        for index, key in enumerate(keys if isinstance(keys, list) else []):
            if _literal(key):
                found.append(f"providers.{name}.api_key[{index}]")
        pool = table.get("credentials")
        for index, item in enumerate(pool if isinstance(pool, list) else []):
            if isinstance(item, dict) and _literal(item.get("api_key")):
                found.append(f"providers.{name}.credentials[{index}].api_key")
        headers = table.get("headers")
        for header, value in (headers if isinstance(headers, dict) else {}).items():
            if _literal(value) and any(word in header.lower() for word in _SECRET_WORDS):
                found.append(f"providers.{name}.headers.{header}")
    server = raw.get("server")
    keys = server.get("keys") if isinstance(server, dict) else None
    for index, key in enumerate(keys if isinstance(keys, list) else []):
        if isinstance(key, dict) and _literal(key.get("key")):
            found.append(f"server.keys[{index}].key")
    state = raw.get("state")
    url = state.get("url") if isinstance(state, dict) else None
    if isinstance(url, str) and _literal(url) and _has_password(url):
        found.append("state.url")
    return found


def _literal(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "${" not in value


def _has_password(url: str) -> bool:
    userinfo, at, _ = url.partition("://")[2].partition("/")[0].rpartition("@")
    return bool(at) and ":" in userinfo
