"""Control-plane HTTP for logins: device flow, token exchange and refresh.

These calls are rare, so they use httpx directly (an `httpx.AsyncClient` passed in, so tests
can hand one over a `MockTransport`, or aim at a local fake server). Each answer comes back as
(status, JSON object); what cannot be trusted to work on a second try — connect errors,
timeouts, 429 and 5xx — raises `Transient`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.sanitize import decode as bounded_decode

if TYPE_CHECKING:
    import httpx

TIMEOUT = 30.0
_SECRETS = re.compile(
    r"(gh[opsu]_[A-Za-z0-9_]{8,}|github_pat_[A-Za-z0-9_]{8,}|sk-ant-[A-Za-z0-9_-]{8,}"
    r"|tid=[^\s\"',]{8,}|Bearer\s+\S{8,}|token\s+\S{12,})"
)


def scrub_secrets(text: str) -> str:
    """Remove anything shaped like a GitHub, Copilot or Anthropic token from text."""
    return _SECRETS.sub("****", text)


class Transient(Exception):
    """The server could not be reached or failed (5xx, 429): worth another try later."""

    def __init__(self, reason: str) -> None:
        super().__init__(scrub_secrets(reason))
        self.reason = scrub_secrets(reason)


class Wire:
    """An httpx client for login endpoints; makes (and later closes) its own if none given."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client
        self._owned = client is None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            # trust_env=False: the library never reads the environment (proxies included)
            self._client = httpx.AsyncClient(timeout=TIMEOUT, trust_env=False)
        return self._client

    async def call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        import httpx

        sent = {"accept": "application/json", **(headers or {})}
        try:
            response = await self.client().request(method, url, headers=sent, json=json, data=form)
        except httpx.TimeoutException:
            raise Transient(f"{_where(url)} did not answer in time") from None
        except httpx.TransportError as exc:
            raise Transient(f"could not reach {_where(url)} ({type(exc).__name__})") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Transient(f"{_where(url)} answered {response.status_code}")
        return response.status_code, _object(response.content)

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            await self._client.aclose()
            self._client = None


def _object(content: bytes) -> dict[str, Any]:
    try:
        data = bounded_decode(content)
    except msgspec.DecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _where(url: str) -> str:
    """The URL without its query (which could carry a secret)."""
    return url.split("?", 1)[0]


def text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def oauth_error(data: Mapping[str, Any], status: int) -> str:
    """`error` (+ `error_description`) of an OAuth error answer, scrubbed and short."""
    error = data.get("error")
    if isinstance(error, dict):  # some servers nest it: {"error": {"type", "message"}}
        error = error.get("type") or error.get("message")
    code = error if isinstance(error, str) and error else f"http_{status}"
    description = text(data, "error_description")
    return scrub_secrets(f"{code}: {description[:200]}" if description else code)
