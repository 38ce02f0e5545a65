"""DeepSeek: OpenAI's format with `reasoning_content` and prompt-cache hit counters.

It attaches usage to the finish chunk even without `stream_options`; the cache-hit counter
becomes `prompt_tokens_details.cached_tokens` in the base's `usage_from`.
"""

from __future__ import annotations

from typing import ClassVar

from thanos_asgi.providers.openai_compat import OpenAICompatible


class DeepSeek(OpenAICompatible):
    kind: ClassVar[str] = "deepseek"
