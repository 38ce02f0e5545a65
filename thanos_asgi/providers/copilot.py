"""GitHub Copilot: OpenAI's wire format behind a GitHub login (`thanos auth login copilot`).

Every request carries a Copilot API token (`authorization: Bearer`), renewed from the stored
GitHub token before it expires (see `thanos_asgi.logins`), plus the editor headers Copilot
expects: `copilot-integration-id: vscode-chat`, `editor-version`, `editor-plugin-version`,
`user-agent`, `openai-intent`, `x-github-api-version`, a fresh `x-request-id`, `x-initiator`
(`agent` once the conversation has assistant or tool turns, else `user`) and
`copilot-vision-request: true` when a message carries an image. The API base is `base_url`
when configured (https://copilot-api.<domain> for GitHub Enterprise), else the one the
Copilot token names, else https://api.githubcopilot.com. Models come from `GET {base}/models`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from thanos_asgi.logins import CopilotSettings, Session, Token
from thanos_asgi.providers._login import LoginProvider, copilot_session
from thanos_asgi.providers.base import Relayed
from thanos_asgi.providers.openai_compat import OpenAICompatible

if TYPE_CHECKING:
    from thanos_asgi.config import ProviderConfig

INTEGRATION_ID = "vscode-chat"
_turn_headers: ContextVar[dict[str, str] | None] = ContextVar("thanos_copilot_turn", default=None)


def turn_headers(body: Mapping[str, Any]) -> dict[str, str]:
    """`x-initiator` and `copilot-vision-request` for one request body."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    roles = {m.get("role") for m in messages if isinstance(m, dict)}
    headers = {"x-initiator": "agent" if roles & {"assistant", "tool"} else "user"}
    if any(_has_image(m) for m in messages):
        headers["copilot-vision-request"] = "true"
    return headers


def _has_image(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "image_url" for part in content
    )


class Copilot(LoginProvider, OpenAICompatible):
    kind: ClassVar[str] = "copilot"

    def make_session(self, config: ProviderConfig) -> Session | None:
        return copilot_session(config)

    def auth_headers(self) -> dict[str, str]:
        return {
            "content-type": "application/json",
            **CopilotSettings().editor_headers(),
            "copilot-integration-id": INTEGRATION_ID,
            "openai-intent": "conversation-panel",
        }

    def adopt(self, token: Token) -> None:
        api = token.extra.get("api")
        if api and not self.config.base_url:
            self.base_url = api.rstrip("/")

    def login_headers(self, token: Token) -> Mapping[str, str]:
        return {
            **self.headers,
            "authorization": f"Bearer {token.access_token}",
            "x-request-id": str(uuid.uuid4()),
            **(_turn_headers.get() or {}),
        }

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        reset = _turn_headers.set(turn_headers(body))
        try:
            return await super().relay(body, model, stream=stream)
        finally:
            _turn_headers.reset(reset)
