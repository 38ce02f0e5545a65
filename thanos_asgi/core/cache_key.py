"""The response cache's key: one digest for every request that must get the same answer.

    sha256(msgspec.json.encode(["thanos-cache/1", scope, targets, request]))

- `scope`: the client key's id (`[cache] scope = "key"`; "-" without a key) or "global";
- `targets`: the sorted `instance/model` pairs the request was routed to, after aliases,
  task tables and the key's allow-list (so "smart" and "openai/gpt-4o" share entries, and
  a rotating strategy does not split them);
- `request`: the canonical request with `model` cleared (the targets say it), `stream`
  False, and `stream_options`, `user` and `metadata` dropped; every other field (messages,
  tools, tool_choice, temperature, seed, max_tokens, stop, response_format, ...) counts.
The front-end's dialect is not part of it: it is already translated away.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from thanos_asgi.core.routing import Target
from thanos_asgi.types import ChatRequest

__all__ = ["VERSION", "cache_key", "canonical", "target_names"]

VERSION = "thanos-cache/1"
_encode = msgspec.json.Encoder(order="sorted").encode


def canonical(request: ChatRequest) -> ChatRequest:
    """`request` without what does not change the answer."""
    return msgspec.structs.replace(
        request, model="", stream=False, stream_options=None, user=None, metadata=None
    )


def target_names(targets: Iterable[Target]) -> list[str]:
    return sorted({f"{target.instance}/{target.model}" for target in targets})


def cache_key(scope: str, targets: Iterable[Target], request: ChatRequest) -> str:
    """`<scope>:<sha256 hex>`; the scope in front lets a store keep scopes apart."""
    data = _encode([VERSION, scope, target_names(targets), canonical(request)])
    return f"{scope}:{hashlib.sha256(data).hexdigest()}"
