"""Semantic lookups: the entry whose prompt is nearest in meaning, above a threshold.

Each stored answer's prompt embedding is kept in this process, grouped by everything of the
key except the messages (scope, targets, every parameter), so only requests to the same
models in the same scope with the same parameters can match. The nearest neighbour by
cosine similarity at or above `threshold` names the exact entry to read; one that has
expired in the store is a miss. The index is bounded (`MAX_VECTORS`, oldest dropped first).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import msgspec

from thanos_asgi.core.cache_key import VERSION, canonical, target_names
from thanos_asgi.core.routing import Target
from thanos_asgi.types import ChatRequest, Message

__all__ = ["MAX_PROMPT_CHARS", "SemanticIndex", "group_of", "prompt_text"]

MAX_VECTORS = 10_000
MAX_PROMPT_CHARS = 32_768  # embedded text; a longer prompt is embedded by its end
_encode = msgspec.json.Encoder(order="sorted").encode


def group_of(scope: str, targets: Iterable[Target], request: ChatRequest) -> str:
    bare = msgspec.structs.replace(canonical(request), messages=[])
    data = _encode([VERSION, "semantic", scope, target_names(targets), bare])
    return hashlib.sha256(data).hexdigest()


def prompt_text(messages: Sequence[Message]) -> str:
    """The prompt as text (role: text per message), for the embedding model."""
    lines = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            content = " ".join(getattr(part, "text", "") or "" for part in content)
        lines.append(f"{message.role}: {content or ''}")
    return "\n".join(lines)[-MAX_PROMPT_CHARS:]


class SemanticIndex:
    def __init__(self, threshold: float, max_vectors: int = MAX_VECTORS) -> None:
        self.threshold = threshold
        self.max_vectors = max_vectors
        self._groups: dict[str, OrderedDict[str, list[float]]] = {}
        self._count = 0

    def nearest(self, group: str, vector: list[float]) -> str | None:
        """The key of the nearest entry at or above the threshold, if any."""
        entries = self._groups.get(group)
        if not entries:
            return None
        norm = _norm(vector)
        best, best_key = self.threshold, None
        for key, other in entries.items():
            score = _cosine(vector, norm, other)
            if score >= best:
                best, best_key = score, key
        return best_key

    def add(self, group: str, key: str, vector: list[float]) -> None:
        if _norm(vector) == 0.0:
            return
        entries = self._groups.setdefault(group, OrderedDict())
        if key not in entries:
            self._count += 1
        entries[key] = vector
        while self._count > self.max_vectors:
            self._drop_oldest()

    def forget(self, group: str, key: str) -> None:
        entries = self._groups.get(group)
        if entries is not None and entries.pop(key, None) is not None:
            self._count -= 1

    def _drop_oldest(self) -> None:
        group = next(iter(self._groups))
        entries = self._groups[group]
        entries.popitem(last=False)
        self._count -= 1
        if not entries:
            del self._groups[group]


def _norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def _cosine(a: list[float], a_norm: float, b: list[float]) -> float:
    if len(a) != len(b) or a_norm == 0.0:
        return -1.0
    b_norm = _norm(b)
    if b_norm == 0.0:
        return -1.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / (a_norm * b_norm)
