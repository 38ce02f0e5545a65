"""Groq: OpenAI's format; streamed usage rides inside `x_groq.usage` on the last chunk."""

from __future__ import annotations

from typing import ClassVar

from thanos_asgi.providers.openai_compat import Meta, OpenAICompatible
from thanos_asgi.types import Usage


class Groq(OpenAICompatible):
    kind: ClassVar[str] = "groq"

    def usage_from(self, meta: Meta) -> Usage | None:
        if meta.usage is None and meta.x_groq is not None and meta.x_groq.usage is not None:
            meta.usage = meta.x_groq.usage
        return super().usage_from(meta)
