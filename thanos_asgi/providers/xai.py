"""xAI (Grok): OpenAI's format; reasoning arrives as `reasoning_content`.

Its `completion_tokens` leave out reasoning tokens (total = prompt + completion + reasoning);
accounting bills `total - prompt` as output, which covers this without a special case here.
"""

from __future__ import annotations

from typing import ClassVar

from thanos_asgi.providers.openai_compat import OpenAICompatible


class XAI(OpenAICompatible):
    kind: ClassVar[str] = "xai"
