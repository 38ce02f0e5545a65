"""Provider logins: GitHub Copilot (device flow) and Anthropic Claude Pro/Max (OAuth + PKCE).

    store = default_store(data_dir / "logins")          # keyring, else private files
    auth = CopilotAuth()                                 # or CopilotSettings.enterprise(...)
    code = await auth.device_code()                      # show user_code, verification_uri
    store.save("copilot", await auth.login(code))

    auth = ClaudeAuth()
    pending = auth.authorize()                           # show pending.url
    store.save("anthropic", await auth.exchange(pending, pasted_code_and_state))

Providers use a login through a `Session` (cached token, single-flight refresh with retries,
"login required" after a revocation). Logins are stored under their login name ("copilot",
"anthropic"), shared by every instance that uses them.

Config keys read when present (defaults in `CopilotSettings` / `ClaudeSettings`): `token_dir`
(private files when no keyring), `oauth_client_id`, `github_url`, `github_api_url` (Copilot),
`oauth_authorize_url`, `oauth_token_url`, `oauth_redirect_uri` (Anthropic); a Copilot
`base_url` of https://copilot-api.<domain> selects GitHub Enterprise <domain>.
"""

from thanos_asgi.logins._claude import Authorization, ClaudeAuth, ClaudeSettings, split_paste
from thanos_asgi.logins._github import CopilotAuth, CopilotSettings, DeviceCode
from thanos_asgi.logins._session import LoginFailed, LoginRequired, Refresher, Revoked, Session
from thanos_asgi.logins._store import (
    FileStore,
    KeyringStore,
    MemoryStore,
    Token,
    TokenStore,
    TokenStoreError,
    default_store,
    mask,
    usable_keyring,
)
from thanos_asgi.logins._wire import Transient, scrub_secrets

ANTHROPIC = "anthropic"
COPILOT = "copilot"
LOGINS = (COPILOT, ANTHROPIC)

__all__ = [
    "ANTHROPIC",
    "COPILOT",
    "LOGINS",
    "Authorization",
    "ClaudeAuth",
    "ClaudeSettings",
    "CopilotAuth",
    "CopilotSettings",
    "DeviceCode",
    "FileStore",
    "KeyringStore",
    "LoginFailed",
    "LoginRequired",
    "MemoryStore",
    "Refresher",
    "Revoked",
    "Session",
    "Token",
    "TokenStore",
    "TokenStoreError",
    "Transient",
    "default_store",
    "mask",
    "scrub_secrets",
    "split_paste",
    "usable_keyring",
]
