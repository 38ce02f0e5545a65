"""Payload rules (`[[payload.default|override|filter]]`) applied to one attempt's request.

The canonical request (before translation) gets the parameters it has fields for; a
relayed body (the client's own JSON, pass-through) gets every parameter by name. Rules
match the attempt's resolved model, and optionally its instance and the client's key.
Values are checked when the gateway is built, with the front door's own range checks, so
a rule can never make a request the gateway would refuse from a client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

import msgspec

from thanos_asgi.config.payload import FilterRule, PayloadConfig, SetRule, probe_request
from thanos_asgi.core.routing import Target
from thanos_asgi.core.validation import check_ranges
from thanos_asgi.exceptions import ConfigError, ThanosError
from thanos_asgi.types import ChatRequest

__all__ = ["PayloadRules"]

_FIELDS = frozenset(ChatRequest.__struct_fields__)


@dataclass(frozen=True, slots=True)
class _Compiled:
    action: str  # default | override | filter
    models: re.Pattern[str]
    instances: frozenset[str] | None
    keys: frozenset[str] | None
    raw: dict[str, Any]  # name -> JSON value (filter: name -> None)
    canonical: dict[str, Any]  # the ChatRequest fields among them, typed

    def matches(self, target: Target, key_id: str | None) -> bool:
        if self.instances is not None and target.instance not in self.instances:
            return False
        if self.keys is not None and key_id not in self.keys:
            return False
        return self.models.fullmatch(target.model) is not None


class PayloadRules:
    def __init__(self, config: PayloadConfig, source: str = "") -> None:
        self.rules: list[_Compiled] = []
        groups: list[tuple[str, list[SetRule] | list[FilterRule]]] = [
            ("default", config.default),
            ("override", config.override),
            ("filter", config.filter),
        ]
        for action, group in groups:
            for index, rule in enumerate[SetRule | FilterRule](group):
                self.rules.append(_compile(action, rule, f"payload.{action}[{index}]", source))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(
        self, request: ChatRequest, raw: dict[str, Any] | None, target: Target, key: str | None
    ) -> tuple[ChatRequest, dict[str, Any] | None]:
        """`request` and `raw` (copied when changed) with the matching rules applied."""
        changes: dict[str, Any] = {}
        body = dict(raw) if raw is not None else None
        for rule in self.rules:
            if not rule.matches(target, key):
                continue
            for name, value in rule.canonical.items():
                if rule.action != "default" or _current(request, changes, name) is None:
                    changes[name] = value
            if body is not None:
                for name, value in rule.raw.items():
                    if rule.action == "filter":
                        body.pop(name, None)
                    elif rule.action == "override" or body.get(name) is None:
                        body[name] = value
        if changes:
            request = msgspec.structs.replace(request, **changes)
        return request, body


def _current(request: ChatRequest, changes: dict[str, Any], name: str) -> Any:
    return changes[name] if name in changes else getattr(request, name)


def _compile(action: str, rule: SetRule | FilterRule, path: str, source: str) -> _Compiled:
    models = re.compile("|".join(f"(?:{translate(glob)})" for glob in rule.models) or "(?!)")
    if isinstance(rule, FilterRule):
        raw: dict[str, Any] = dict.fromkeys(rule.params)
        canonical = {name: None for name in rule.params if name in _FIELDS}
    else:
        raw = dict(rule.params)
        probe = probe_request(rule.params)
        try:
            check_ranges(probe)
        except ThanosError as exc:
            raise ConfigError(exc.message, source=source, path=f"{path}.params") from None
        canonical = {name: getattr(probe, name) for name in rule.params if name in _FIELDS}
    return _Compiled(
        action,
        models,
        frozenset(rule.instances) if rule.instances is not None else None,
        frozenset(rule.keys) if rule.keys is not None else None,
        raw,
        canonical,
    )
