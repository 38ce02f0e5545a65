"""Credential pools: several API keys for one provider instance, and how one is picked.

    [providers.openai]
    credential_strategy = "round-robin"     # round-robin | fill-first | least-used
    [[providers.openai.credentials]]
    id = "team-a"
    api_key = "${OPENAI_KEY_A}"
    [[providers.openai.credentials]]
    id = "team-b"
    api_key = "${OPENAI_KEY_B}"
    weight = 2

`api_key = ["${K1}", "${K2}"]` is the short form (ids `key1`, `key2`); a single `api_key`
stays what it always was: one implicit credential, no pool. Ids show in headers, metrics,
the ledger and `/health/ready`; keys never do.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

from thanos_asgi.exceptions import ConfigError

__all__ = ["Credential", "CredentialStrategy", "check_pool", "expand_short_form"]

CredentialStrategy: TypeAlias = Literal["round-robin", "fill-first", "least-used"]
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_CREDENTIALS = 256


class Credential(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    id: str
    api_key: str  # secret; `${VAR}` allowed
    weight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    models: list[str] | None = None  # globs of the models this key may serve; None: all
    base_url: str | None = None
    proxy: str | None = None


def expand_short_form(table: dict[str, Any], path: str, source: str) -> None:
    """`api_key = [..]` -> `credentials = [{id = "key1", api_key = ..}, ..]`, in place."""
    keys = table.get("api_key")
    if isinstance(keys, list):
        if "credentials" in table:
            raise ConfigError(
                "set api_key or credentials, not both", source=source, path=f"{path}.api_key"
            )
        if not all(isinstance(key, str) for key in keys):
            raise ConfigError("a list of strings expected", source=source, path=f"{path}.api_key")
        del table["api_key"]
        table["credentials"] = [
            {"id": f"key{number}", "api_key": key} for number, key in enumerate(keys, 1)
        ]
        if not keys:
            raise ConfigError(
                "an empty credential pool; give at least one key",
                source=source,
                path=f"{path}.api_key",
            )
    elif "credentials" in table:
        if table["credentials"] == []:
            raise ConfigError(
                "an empty credential pool; give at least one credential",
                source=source,
                path=f"{path}.credentials",
            )
        if table.get("api_key"):
            raise ConfigError(
                "set api_key or credentials, not both", source=source, path=f"{path}.api_key"
            )


def check_pool(credentials: list[Credential], path: str, source: str) -> None:
    """Ids well-formed and unique, every key set, not absurdly many."""
    if len(credentials) > MAX_CREDENTIALS:
        raise ConfigError(
            f"at most {MAX_CREDENTIALS} credentials per instance", source=source, path=path
        )
    seen: set[str] = set()
    for index, credential in enumerate(credentials):
        where = f"{path}[{index}]"
        if not _ID.fullmatch(credential.id):
            raise ConfigError(
                "id must be 1-64 letters, digits, '_', '.' or '-' (it shows in headers)",
                source=source,
                path=f"{where}.id",
            )
        if credential.id in seen:
            raise ConfigError(
                f"duplicate credential id {credential.id!r}", source=source, path=f"{where}.id"
            )
        seen.add(credential.id)
        if not credential.api_key:
            raise ConfigError(
                "api_key is empty (is its ${VAR} set?)", source=source, path=f"{where}.api_key"
            )
