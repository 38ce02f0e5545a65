"""OpenAI: the reference implementation of the canonical format."""

from __future__ import annotations

from typing import ClassVar

from thanos_asgi.providers.openai_compat import OpenAICompatible


class OpenAI(OpenAICompatible):
    kind: ClassVar[str] = "openai"

    def auth_headers(self) -> dict[str, str]:
        headers = super().auth_headers()
        if self.config.organization:
            headers["openai-organization"] = self.config.organization
        if self.config.project:
            headers["openai-project"] = self.config.project
        return headers
