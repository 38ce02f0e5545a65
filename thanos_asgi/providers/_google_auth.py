"""Google OAuth2 access tokens from a service-account key file (RFC 7523 JWT bearer grant).

`read_service_account` loads the JSON key (`type: service_account`). `GoogleTokens` signs an
RS256 assertion (iss = sub = client_email, aud = token_uri, scope, one hour), posts it to the
key's `token_uri` through the adapter's own transport, caches the access token and refreshes it
five minutes before it expires - one refresh at a time, however many requests wait for it.

Only key files are read, and only from the path given: the library never looks at
`GOOGLE_APPLICATION_CREDENTIALS` itself (only the CLI reads the environment); a config can say
`credentials_file = "${GOOGLE_APPLICATION_CREDENTIALS}"`. Neither the private key nor a token
ever goes into an exception message, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import msgspec
from authlib.oauth2.rfc7523 import JWTBearerGrant  # type: ignore[import-untyped]
from joserfc.jwk import RSAKey

from thanos_asgi.exceptions import UpstreamProtocolError, UpstreamStatusError
from thanos_asgi.sanitize import Decoder
from thanos_asgi.upstream import Timeouts, Transport

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
REFRESH_MARGIN = 300.0  # seconds before expiry
ASSERTION_LIFETIME = 3600  # the longest Google accepts
_FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
_MAX_ERROR_BODY = 4096


class _KeyFile(msgspec.Struct):
    type: str = ""
    client_email: str = ""
    private_key: str = ""
    private_key_id: str = ""
    token_uri: str = DEFAULT_TOKEN_URI
    project_id: str = ""


class _TokenAnswer(msgspec.Struct):
    access_token: str = ""
    expires_in: float = 3600.0


class _TokenError(msgspec.Struct):
    error: str = ""
    error_description: str = ""


_key_file = Decoder(_KeyFile)
_token_answer = Decoder(_TokenAnswer)
_token_error = Decoder(_TokenError)


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    token_uri: str
    project_id: str
    key_id: str
    key: RSAKey = field(repr=False)


def read_service_account(path: str) -> ServiceAccount:
    """Load a service-account key file; ValueError (naming the file, never the key) if unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read credentials_file {path!r}: {exc.strerror}") from None
    try:
        keyfile = _key_file.decode(data)
    except msgspec.DecodeError:
        raise ValueError(f"credentials_file {path!r} is not a JSON key file") from None
    if keyfile.type != "service_account":
        raise ValueError(
            f"credentials_file {path!r} holds {keyfile.type or 'an unknown kind of'!s} "
            "credentials; only service-account key files are supported"
        )
    if not keyfile.client_email or not keyfile.private_key:
        raise ValueError(f"credentials_file {path!r} lacks client_email or private_key")
    try:
        key = RSAKey.import_key(keyfile.private_key)
    except Exception:  # whatever the reason, its text might quote the key
        raise ValueError(f"the private_key in credentials_file {path!r} cannot be read") from None
    return ServiceAccount(
        client_email=keyfile.client_email,
        token_uri=keyfile.token_uri or DEFAULT_TOKEN_URI,
        project_id=keyfile.project_id,
        key_id=keyfile.private_key_id,
        key=key,
    )


class GoogleTokens:
    """A cached access token for one service account, refreshed once per expiry."""

    def __init__(
        self,
        account: ServiceAccount,
        transport: Transport,
        *,
        provider: str,
        timeouts: Timeouts,
        scope: str = SCOPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.transport = transport
        self.provider = provider
        self.timeouts = timeouts
        self.scope = scope
        self.clock = clock
        self.current = ""  # the access token; for scrubbing, never for display
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"GoogleTokens({self.account.client_email!r})"

    def _fresh(self) -> bool:
        return bool(self.current) and self.clock() < self._refresh_at

    async def token(self) -> str:
        """A valid access token; fetches a new one when the cached one is near expiry."""
        if self._fresh():
            return self.current
        async with self._lock:
            if not self._fresh():  # another request may have refreshed it while we waited
                await self._refresh()
            return self.current

    def assertion(self) -> str:
        now = int(self.clock())
        email = self.account.client_email
        header = {"alg": "RS256", "typ": "JWT"}
        if self.account.key_id:
            header["kid"] = self.account.key_id
        signed: str = JWTBearerGrant.sign(
            self.account.key,
            issuer=email,
            audience=self.account.token_uri,
            subject=email,
            issued_at=now,
            expires_at=now + ASSERTION_LIFETIME,
            claims={"scope": self.scope},
            header=header,
        )
        return signed

    async def _refresh(self) -> None:
        body = urlencode({"grant_type": GRANT_TYPE, "assertion": self.assertion()}).encode()
        started = self.clock()
        response = await self.transport.send(
            "POST", self.account.token_uri, headers=_FORM, body=body, timeouts=self.timeouts
        )
        data = await response.read()
        if response.status >= 400:
            raise self._failure(response.status, data[:_MAX_ERROR_BODY])
        try:
            answer = _token_answer.decode(data)
        except msgspec.DecodeError:
            answer = _TokenAnswer()
        if not answer.access_token:
            raise UpstreamProtocolError(
                "the Google token endpoint answered without an access_token",
                provider=self.provider,
            )
        lifetime = max(answer.expires_in, 0.0)
        self.current = answer.access_token
        self._refresh_at = started + lifetime - min(REFRESH_MARGIN, lifetime / 2)

    def _failure(self, status: int, data: bytes) -> UpstreamStatusError:
        """A refused grant is a credential failure (our 502); overload and outages stay so."""
        try:
            error = _token_error.decode(data)
        except msgspec.DecodeError:
            error = _TokenError()
        detail = ": ".join(part for part in (error.error, error.error_description[:200]) if part)
        credential = status in (400, 401, 403)
        return UpstreamStatusError(
            f"provider '{self.provider}' could not get a Google access token "
            f"(token endpoint answered {status}{': ' + detail if detail else ''}); "
            + ("check its credentials_file" if credential else "try again later"),
            provider=self.provider,
            upstream_status=401 if credential else status,
            upstream_code=error.error or None,
        )
