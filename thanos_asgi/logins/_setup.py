"""`LoginSetup`: one login as a provider instance uses it, for `thanos auth`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from thanos_asgi.logins._claude import ClaudeSettings
from thanos_asgi.logins._github import CopilotSettings
from thanos_asgi.logins._store import TokenStore, default_store


@dataclass(frozen=True)
class LoginSetup:
    """What logging in for `name` means: the flow (`login`, also the name the login is stored
    under), its OAuth settings, and the folder for token files when no keyring is usable."""

    name: str  # the provider instance (or, with no such instance, the login) it is for
    login: str  # "copilot" or "anthropic"
    settings: CopilotSettings | ClaudeSettings
    token_dir: str | os.PathLike[str] | None = None

    def store(self) -> TokenStore:
        return default_store(self.token_dir)
