"""Payload rules: parameters set, forced or removed per model, before a request goes upstream.

    [[payload.default]]                 # set only when the client did not
    models = ["gpt-5*", "o4*"]
    params = { reasoning_effort = "low" }
    [[payload.override]]                # always set
    models = ["claude-*"]
    params = { max_tokens = 4096 }
    [[payload.filter]]                  # remove
    models = ["deepseek-*"]
    params = ["logprobs", "top_logprobs"]

Globs match the resolved model (the provider's own name), optionally narrowed to
`instances` and client `keys`. Defaults apply first, then overrides, then filters, each
kind in file order. A rule may not touch what the request is (model, messages, stream,
input); values must fit the canonical request's types (checked here) and ranges (checked
by the gateway when it is built, with the front door's own validation).
"""

from __future__ import annotations

from typing import Any

import msgspec

from thanos_asgi.exceptions import ConfigError
from thanos_asgi.types import ChatRequest

__all__ = ["FilterRule", "PayloadConfig", "SetRule", "check_payload", "probe_request"]

PROTECTED = frozenset({"model", "messages", "stream", "input", "stream_options"})


class _Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    instances: list[str] | None = None
    keys: list[str] | None = None  # client key ids


class SetRule(_Rule, frozen=True):
    params: dict[str, Any]


class FilterRule(_Rule, frozen=True):
    params: list[str]


class PayloadConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    default: list[SetRule] = []
    override: list[SetRule] = []
    filter: list[FilterRule] = []

    @property
    def empty(self) -> bool:
        return not (self.default or self.override or self.filter)


def probe_request(params: dict[str, Any]) -> ChatRequest:
    """A minimal request carrying `params`' canonical fields (msgspec.ValidationError if a
    value has the wrong type)."""
    known = ChatRequest.__struct_fields__
    fields = {name: value for name, value in params.items() if name in known}
    body = {"model": "probe", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.convert(body, ChatRequest)


def check_payload(payload: PayloadConfig, source: str, instances: set[str]) -> None:
    """Refuse rules that touch protected fields, carry ill-typed values or name unknown
    instances."""
    groups: list[tuple[str, list[SetRule] | list[FilterRule]]] = [
        ("default", payload.default),
        ("override", payload.override),
        ("filter", payload.filter),
    ]
    for kind, rules in groups:
        for index, rule in enumerate[SetRule | FilterRule](rules):
            path = f"payload.{kind}[{index}]"
            names = list(rule.params)
            touched = sorted(PROTECTED.intersection(names))
            if touched:
                raise ConfigError(
                    f"a payload rule may not set or remove {', '.join(touched)}",
                    source=source,
                    path=f"{path}.params",
                )
            for instance in rule.instances or ():
                if instance not in instances:
                    raise ConfigError(
                        f"unknown instance {instance!r}", source=source, path=f"{path}.instances"
                    )
            if isinstance(rule, SetRule):
                try:
                    probe_request(rule.params)
                except msgspec.ValidationError as exc:
                    raise ConfigError(str(exc), source=source, path=f"{path}.params") from None
