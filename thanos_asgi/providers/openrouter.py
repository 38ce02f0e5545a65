"""OpenRouter: OpenAI's format; keep-alive comments and in-stream error chunks.

Both are handled by the base (comments are dropped, a chunk with an `error` object ends the
stream with an error event). `HTTP-Referer` and `X-Title` identify the app to OpenRouter.
"""

from __future__ import annotations

from typing import ClassVar

from thanos_asgi.providers.openai_compat import OpenAICompatible


class OpenRouter(OpenAICompatible):
    kind: ClassVar[str] = "openrouter"

    def auth_headers(self) -> dict[str, str]:
        return {**super().auth_headers(), "x-title": "thanos-asgi"}
