"""Loading a config: find the file, parse TOML, interpolate `${VAR}`, validate, resolve keys.

Nothing here reads `os.environ`: the caller passes the environment as `env`. Every refusal is a
`ConfigError` naming the file and the key path in TOML terms (`providers.claude.max_tokens`),
and never echoes a secret.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from thanos_asgi.config._inert import warn_inert
from thanos_asgi.config.credentials import check_pool, expand_short_form
from thanos_asgi.config.defaults import DEFAULTS_SOURCE, default_tables
from thanos_asgi.config.literals import literal_secrets
from thanos_asgi.config.payload import check_payload
from thanos_asgi.config.problems import Renames, key_path, validation_error
from thanos_asgi.config.schema import (
    Config,
    HealthConfig,
    ProviderConfig,
    RoutingConfig,
    split_host_port,
)
from thanos_asgi.exceptions import ConfigError
from thanos_asgi.providers import SPECS, effective_kind, infer_kind

__all__ = ["config_paths", "default_config", "load_config", "parse_config"]


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?|\'[^\']*\'?')
_TABLE_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(?:#.*)?$")
_ALIAS_TARGET = re.compile(r"[^\s/]+(?:/[^\s/]+)*")
_ROUTING_KEYS = frozenset(field.name for field in msgspec.structs.fields(RoutingConfig))
_HEALTH_KEYS = frozenset(field.name for field in msgspec.structs.fields(HealthConfig))
_log = logging.getLogger("thanos_asgi.config")


def config_paths(env: Mapping[str, str]) -> list[Path]:
    """Where `load_config` looks, in order; the first file that exists wins."""
    paths = [Path(env["THANOS_CONFIG"])] if env.get("THANOS_CONFIG") else []
    paths.append(Path("thanos.toml"))
    if env.get("HOME"):
        paths.append(Path(env["HOME"]) / ".config" / "thanos" / "config.toml")
    paths.append(Path("/etc/thanos/config.toml"))
    return paths


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str]) -> Config:
    """Load `path`, or the first config file found (`config_paths`), or `default_config(env)`."""
    if path is None:
        explicit = env.get("THANOS_CONFIG")
        if explicit and not Path(explicit).is_file():
            raise ConfigError("THANOS_CONFIG names a file that does not exist", source=explicit)
        path = next((found for found in config_paths(env) if found.is_file()), None)
        if path is None:
            return default_config(env)
    return parse_config(_read(Path(path)), source=os.fspath(path), env=env)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=str(path)) from None


def default_config(env: Mapping[str, str]) -> Config:
    """No file: Ollama, plus one instance per kind whose standard key variable is set
    (`thanos_asgi.config.defaults`)."""
    return _build(default_tables(env), source=DEFAULTS_SOURCE, env=env)


def parse_config(text: str, *, source: str, env: Mapping[str, str]) -> Config:
    """Validate TOML `text` (read from `source`) into a `Config`, values from `env`."""
    try:
        raw = tomllib.loads(text)
        return _build(raw, source=source, env=env)
    except tomllib.TOMLDecodeError as error:
        raise _toml_error(str(error), text, source) from None
    except RecursionError:  # tomllib (and our walk of its values) recurse per level
        raise ConfigError(f"{source}: values nested too deeply") from None


def _toml_error(message: str, text: str, source: str) -> ConfigError:
    position = _TOML_POSITION.search(message)
    if position is None:
        reason = message.removesuffix(" (at end of document)")
        return ConfigError(f"end of file: invalid TOML: {reason}", source=source)
    line, column = int(position[1]), int(position[2])
    reason = f"line {line}, column {column}: invalid TOML: {message[: position.start()]}"
    hint = _inline_table_hint(text.splitlines(), line, column)
    return ConfigError(f"{reason}; {hint}" if hint else reason, source=source)


def _inline_table_hint(lines: list[str], line: int, column: int) -> str | None:
    """A hint when the error sits in an inline table left open at the end of a line."""
    if not 1 <= line <= len(lines):
        return None
    before_error = lines[line - 1][: column - 1]
    opened = _unclosed_brace(before_error)
    if opened is None:
        return None
    assignment = before_error[:opened].rstrip()
    key = assignment[:-1].strip() if assignment.endswith("=") else ""
    table = next(
        (m[1].strip() for m in map(_TABLE_HEADER.match, reversed(lines[: line - 1])) if m), ""
    )
    target = ".".join(part for part in (table, key) if part) if key else "routing.<mode>.<task>"
    return f"inline tables must fit on one line in TOML 1.0; use a [{target}] table instead"


def _unclosed_brace(text: str) -> int | None:
    """Index of the outermost `{` still open at the end of `text` (strings and comments skipped)."""
    opened: list[int] = []
    code = _STRING.sub(lambda string: "_" * len(string[0]), text).partition("#")[0]
    for index, char in enumerate(code):
        if char == "{":
            opened.append(index)
        elif char == "}" and opened:
            opened.pop()
    return opened[0] if opened else None


def _build(raw: dict[str, Any], *, source: str, env: Mapping[str, str]) -> Config:
    if "source" in raw:
        raise ConfigError("unknown key", source=source, path="source")
    literal = literal_secrets(raw)
    if literal:
        _log.warning(
            "%s holds secrets as plain text (%s); prefer ${VAR} and keep the values in the "
            "environment",
            source,
            ", ".join(literal),
        )
    data: dict[str, Any] = _interpolate(raw, env)
    renames = _prepare(data, source)
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as error:
        raise validation_error(str(error), data, source, renames) from None
    config = _resolve_keys(msgspec.structs.replace(config, source=source), env)
    _check(config)
    warn_inert(config)
    return config


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """`${VAR}` and `${VAR:-default}` in every string value (keys untouched); unset is ""."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: env.get(m[1]) or (m[2] or ""), value)
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    return value


def _prepare(data: dict[str, Any], source: str) -> Renames:
    """Reshape TOML into the schema in place; returns how to spell its key paths back."""
    renames: Renames = []
    if _gather(data.get("routing"), _ROUTING_KEYS, "modes"):
        renames.append((["routing", "modes"], ["routing"]))
    if _gather(data.get("health"), _HEALTH_KEYS, "providers"):
        renames.append((["health", "providers"], ["health"]))
    providers = data.get("providers")
    if isinstance(providers, dict):
        for name, table in providers.items():
            if isinstance(table, dict):
                renames += _prepare_provider(name, table, source)
    return renames


def _gather(table: Any, reserved: frozenset[str], into: str) -> bool:
    """Move the sub-tables of `table` that aren't schema keys into `table[into]`."""
    if not isinstance(table, dict) or not isinstance(table.get(into, {}), dict):
        return False
    moved = {k: v for k, v in table.items() if k not in reserved and isinstance(v, dict)}
    for key in moved:
        del table[key]
    if moved:
        table[into] = {**table.get(into, {}), **moved}
    return bool(moved)


def _prepare_provider(name: str, table: dict[str, Any], source: str) -> Renames:
    path = f"providers.{key_path([name])}"
    renames: Renames = []
    if "endpoint" in table:
        if "base_url" in table:
            raise ConfigError(
                "set base_url or endpoint, not both", source=source, path=f"{path}.endpoint"
            )
        table["base_url"] = table.pop("endpoint")
        renames.append((["providers", name, "base_url"], ["providers", name, "endpoint"]))
    expand_short_form(table, path, source)
    if table.setdefault("name", name) != name:
        raise ConfigError(
            "the name is the table name; remove this key", source=source, path=f"{path}.name"
        )
    kind = table.setdefault("kind", infer_kind(name))
    if kind is None:
        raise ConfigError(
            f"cannot tell the provider kind from the name {name!r}; "
            f"add kind = one of: {', '.join(SPECS)}",
            source=source,
            path=path,
        )
    if isinstance(kind, str) and kind not in SPECS:
        raise ConfigError(
            f"unknown kind {kind!r}; valid kinds: {', '.join(SPECS)}",
            source=source,
            path=f"{path}.kind",
        )
    return renames


def _resolve_keys(config: Config, env: Mapping[str, str]) -> Config:
    providers = {name: _resolve_provider(p, env) for name, p in config.providers.items()}
    if config.server.trust_env:
        providers = {name: _env_proxy(p, env) for name, p in providers.items()}
    keys = [
        msgspec.structs.replace(key, key=key.key or None, key_hash=key.key_hash or None)
        for key in config.server.keys
    ]
    server = msgspec.structs.replace(config.server, keys=keys)
    return msgspec.structs.replace(config, providers=providers, server=server)


def _resolve_provider(provider: ProviderConfig, env: Mapping[str, str]) -> ProviderConfig:
    """api_key, else env[api_key_env], else the kind's standard variable; else None."""
    if provider.credentials:  # a pool: its keys are its own, no variable adds one
        return provider
    key = provider.api_key or (env.get(provider.api_key_env) if provider.api_key_env else None)
    spec, url = provider.spec, (provider.base_url or "").rstrip("/")
    oauth = provider.auth_method == "oauth" or provider.use_github_auth
    # The standard key goes only to the kind's own endpoint, never to a custom base_url.
    if not key and spec and not oauth and url in ("", spec.base_url.rstrip("/")):
        key = next((env[name] for name in spec.env_keys if env.get(name)), None)
    return msgspec.structs.replace(provider, api_key=key or None)


def _env_proxy(provider: ProviderConfig, env: Mapping[str, str]) -> ProviderConfig:
    """`[server] trust_env`: a provider without `proxy` gets HTTPS_PROXY (HTTP_PROXY for an
    http:// base_url, else ALL_PROXY) unless NO_PROXY names its host."""
    url = provider.effective_base_url
    if provider.proxy or not url:
        return provider
    parts = urlsplit(url)

    def get(name: str) -> str:
        return env.get(name) or env.get(name.upper()) or ""

    proxy = get(f"{parts.scheme}_proxy") or get("all_proxy")
    host = parts.hostname or ""
    if not proxy or _no_proxy(host, get("no_proxy")):
        return provider
    return msgspec.structs.replace(provider, proxy=proxy)


def _no_proxy(host: str, entries: str) -> bool:
    """Whether NO_PROXY (`*`, or hosts and domains, `.example.com` or `example.com`) names host."""
    host = host.lower()
    for entry in entries.lower().replace(" ", "").split(","):
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        name = name.strip("[]").lstrip(".")
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def _check(config: Config) -> None:
    """Cross-field rules msgspec cannot express; each names its key path."""
    _check_address(config.server.bind, "server.bind", config.source)
    if config.server.grpc is not None:
        _check_address(config.server.grpc, "server.grpc", config.source)
    for index, key in enumerate(config.server.keys):
        if not key.key and not key.key_hash:
            raise ConfigError(
                "needs key (is its ${VAR} set?) or key_hash",
                source=config.source,
                path=f"server.keys[{index}]",
            )
    for name, provider in config.providers.items():
        if provider.credentials:
            path = f"providers.{key_path([name])}.credentials"
            check_pool(provider.credentials, path, config.source)
        if provider.wire_api == "responses" and not _speaks_openai(provider):
            raise ConfigError(
                'wire_api = "responses" is for OpenAI-compatible kinds only',
                source=config.source,
                path=f"providers.{key_path([name])}.wire_api",
            )
    check_payload(config.payload, config.source, set(config.providers))
    _check_chain(config, config.routing.fallback_chain, "routing.fallback_chain", known_ok=False)
    _check_chain(config, config.ai.fallback_chain, "ai.fallback_chain", known_ok=True)
    primary = config.ai.primary_provider
    if primary not in (None, "auto", *config.providers):
        raise _unknown_instance(config, str(primary), "ai.primary_provider", also="'auto', ")
    for alias, target in config.routing.aliases.items():
        if not _ALIAS_TARGET.fullmatch(target):
            raise ConfigError(
                f"alias target {target!r} must look like instance/model or a model name",
                source=config.source,
                path=f"routing.aliases.{key_path([alias])}",
            )


def _check_address(address: str, path: str, source: str) -> None:
    try:
        split_host_port(address)
    except ValueError as error:
        raise ConfigError(str(error), source=source, path=path) from None


def _check_chain(config: Config, chain: list[str], path: str, *, known_ok: bool) -> None:
    """Chain entries name configured instances; `[ai]` chains may also name a known provider
    left unconfigured (it is skipped)."""
    for index, name in enumerate(chain):
        if name not in config.providers and not (known_ok and infer_kind(name)):
            raise _unknown_instance(config, name, f"{path}[{index}]")


def _unknown_instance(config: Config, name: str, path: str, also: str = "") -> ConfigError:
    names = ", ".join(repr(known) for known in config.providers) or "(none)"
    return ConfigError(
        f"{name!r} names no [providers.{name}] table; use one of: {also}{names}",
        source=config.source,
        path=path,
    )


_OPENAI_KINDS = frozenset({"openai", "openai-compatible", "xai", "deepseek", "groq", "openrouter"})


def _speaks_openai(provider: ProviderConfig) -> bool:
    return effective_kind(provider.name, provider.kind) in _OPENAI_KINDS
