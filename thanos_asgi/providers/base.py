"""What every provider adapter is, and the HTTP plumbing they share: the public extension point.

An adapter converts canonical requests (OpenAI Chat Completions, `thanos_asgi.types`) to its
provider's wire format and back. Adapters whose wire format *is* a client's format also offer
`relay`: the client's own JSON goes upstream with only `model` changed, and the provider's
bytes come back untouched except for what accounting must read (the pass-through fast path).

To add a provider: subclass `HTTPProvider` (it gives you `send`, credentials, timeouts, error
mapping and secret scrubbing), implement `chat`, `open_stream`, `relay`, `embed` and
`list_models`, and register it with `thanos_asgi.providers.register_kind`. Anything that
satisfies the `Provider` protocol works too. `examples/custom_provider/` is a complete one.

The gateway builds each configured instance as `Adapter(config, spec=spec, transport=t)`:
`config` is its `[providers.<name>]` table (`thanos_asgi.config.ProviderConfig`), `spec` the
registered facts of its kind, `t` the shared upstream `Transport`. Raise the exceptions of
`thanos_asgi.exceptions` (`send` does it for transport errors and statuses >= 400); the
gateway decides on retries and fallbacks from them.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import msgspec

from thanos_asgi.context import opened_responses
from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamError,
    UpstreamStatusError,
)
from thanos_asgi.providers.batches import Batching
from thanos_asgi.providers.resets import reset_after
from thanos_asgi.sanitize import Decoder, NestingTooDeep, echo, scrub
from thanos_asgi.sanitize import decode as bounded_decode
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ToolCall,
    Usage,
)
from thanos_asgi.upstream import Timeouts, Transport, UpstreamResponse

if TYPE_CHECKING:
    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import ProviderSpec

__all__ = [
    "MAX_ERROR_BODY",
    "HTTPProvider",
    "Provider",
    "Relayed",
    "Unavailable",
    "embedding_base64",
    "retry_after",
    "timeouts_of",
    "tool_call_arguments",
]

MAX_ERROR_BODY = 64 * 1024
"""The most of an error answer's body that is read (the rest is dropped)."""


@dataclass(eq=False)
class Relayed:
    """A pass-through answer: `body` (whole JSON) or `events` (complete SSE event bytes)."""

    model: str
    body: bytes = b""
    events: AsyncIterator[bytes] | None = None
    usage: Usage | None = None  # known at once for bodies, once the stream has ended for events
    headers: dict[str, str] = field(default_factory=dict)
    # Set by a translated reader before it reads `events`: they come whole but otherwise as
    # the provider sent them, for the reader takes them apart anyway (errors, usage, end).
    raw: bool = False


@runtime_checkable
class Provider(Protocol):
    """One configured provider instance, as the gateway calls it.

    `model` arguments are the provider's own model name (routing has removed any `instance/`
    prefix); `request.model` is what the client asked for and is not to be sent upstream.
    """

    name: str  # the instance name from config (`[providers.<name>]`)
    kind: str
    wire: str  # the client format this provider speaks natively ("openai", "anthropic", "")
    default_model: str | None
    models: list[str]  # models named in config

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        """One whole answer (`request.stream` is False)."""
        ...

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        """Send the request; raise before returning if the provider refuses it.

        The iterator yields canonical chunks as they arrive, the last one carrying `usage`
        when the provider reports it; closing it early must release the upstream response."""
        ...

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        """Send the client's own JSON (only `model` replaced); called only when the client's
        dialect equals `wire`. Adapters with `wire = ""` never get this call."""
        ...

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        """Embeddings; raise `InvalidRequest` if the provider has none."""
        ...

    async def list_models(self) -> list[str]:
        """The provider's own list of models (GET /v1/models merges it in)."""
        ...

    def status(self) -> dict[str, Any]:
        """A small JSON-able summary for `/health/ready` (never a secret)."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter owns (not the shared transport)."""
        ...


class HTTPProvider(Batching):
    """Shared plumbing: base URL, credentials, timeouts, sending and error mapping.

    Subclasses set `kind` and `wire`, override `auth_headers` (the key as their API wants it)
    and, if their error bodies are not OpenAI-shaped, `error_fields`; they call `send` and
    `read` and implement the `Provider` methods. Attributes: `base_url` (config, else the
    spec's), `api_key`, `headers` (auth + the config's `headers`), `timeouts`, `transport`.
    """

    kind: ClassVar[str] = ""
    wire: ClassVar[str] = ""

    def __init__(self, config: ProviderConfig, *, spec: ProviderSpec, transport: Transport) -> None:
        self.name = config.name
        self.spec = spec
        self.config = config
        self.default_model = config.model
        self.models = list(config.models)
        self.base_url = (config.base_url or spec.base_url).rstrip("/")
        self.api_key = config.credential
        self.transport = transport
        self.timeouts = timeouts_of(config)
        self.headers = {**self.auth_headers(), **config.headers}
        self.last_error: str | None = None

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying `self.api_key`, e.g. `{"authorization": f"Bearer {key}"}`."""
        return {}

    def missing_key(self) -> str | None:
        """Why this instance cannot be called for lack of a key, or None when it can."""
        if self.api_key or not self.spec.needs_key:
            return None
        hint = " or ".join(self.spec.env_keys) or "api_key"
        return f"provider '{self.name}' has no API key: set {hint} or api_key in its config"

    async def send(
        self, method: str, path: str, body: bytes | None = None, *, timeouts: Timeouts | None = None
    ) -> UpstreamResponse:
        """Send to `base_url + path`; raise our exceptions for transport errors and for any
        answer but a 2xx (a 3xx is not followed: it names where it points)."""
        reason = self.missing_key()
        if reason:
            raise ProviderUnavailable(reason, code="provider_not_configured")
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        try:
            headers = await self.request_headers()
            response = await self.transport.send(
                method, url, headers=headers, body=body, timeouts=timeouts or self.timeouts
            )
            opened = opened_responses.get()
            if opened is not None:  # a dispatch attempt: its end closes what is still open
                opened.append(response)
            if not 200 <= response.status < 300:
                raise await self._error(response)
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        return response

    async def request_headers(self) -> Mapping[str, str]:
        """Headers for the next request: fixed ones by default; logins override this to add
        a fresh access token (refreshing it first when it is about to expire)."""
        return self.headers

    def tag(self, exc: UpstreamError) -> UpstreamError:
        """Name this instance on an upstream error, scrub secrets and remember it."""
        exc.provider = exc.provider or self.name
        exc.message = self.scrub(exc.message)
        exc.args = (exc.message,)
        self.last_error = exc.message
        return exc

    async def read(self, response: UpstreamResponse) -> bytes:
        """The whole body (and the response closed), transport errors tagged with this name."""
        try:
            return await response.read()
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__

    async def _error(self, response: UpstreamResponse) -> UpstreamStatusError:
        try:
            data = await _read_capped(response)
        except UpstreamError:
            data = b""
        return self.error_from(response.status, data, response.headers)

    def error_from(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamStatusError:
        """Turn an error answer into an exception; adapters override `error_fields`."""
        message, upstream_type, upstream_code, param = self.error_fields(body)
        if status < 400:
            location = headers.get("location")
            message = f"provider '{self.name}' answered {status}" + (
                f" (a redirect to {location[:200]}); check its base_url" if location else ""
            )
            upstream_type, upstream_code, param = None, "upstream_redirect", None
        elif status in (401, 403):
            message = (
                f"provider '{self.name}' rejected the gateway's credentials "
                f"(upstream {status}{' ' + upstream_code if upstream_code else ''}); "
                "check its API key"
            )
        else:
            message = f"{self.name}: {message or f'upstream answered {status}'}"
        error = UpstreamStatusError(
            self.scrub(message),
            provider=self.name,
            upstream_status=status,
            upstream_type=upstream_type,
            upstream_code=upstream_code,
            param=param,
            retry_after=retry_after(headers),
        )
        if status in (402, 429):  # when a pooled key may be used again (`providers.resets`)
            error.reset_after = reset_after(headers, body, time.time())
        return error

    def error_fields(self, body: bytes) -> tuple[str, str | None, str | None, str | None]:
        """(message, type, code, param) from an error body; OpenAI's shape by default."""
        try:
            data = bounded_decode(body)
        except msgspec.DecodeError:
            return body[:200].decode("utf-8", "replace").strip(), None, None, None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, str):
            return error, None, None, None
        if not isinstance(error, dict):
            return str(data)[:200], None, None, None
        code = error.get("code")
        return (
            str(error.get("message") or ""),
            _opt_str(error.get("type")),
            _opt_str(code),
            _opt_str(error.get("param")),
        )

    def scrub(self, text: str) -> str:
        """Remove this instance's key from text that may reach a client or a log: as is, in
        any case, split, or base64-encoded (`sanitize.scrub`)."""
        return scrub(text, (self.api_key,))

    def status(self) -> dict[str, Any]:
        """Kind, base URL, whether it has its credentials, and the last error seen."""
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "configured": self.missing_key() is None,
            "last_error": self.last_error,
        }

    async def aclose(self) -> None:
        """Release what the adapter owns; the gateway closes the shared transports."""


def timeouts_of(config: ProviderConfig) -> Timeouts:
    """Connect 10 s; first byte and idle from `timeout_ms` unless set apart; default 600 s."""
    general = config.timeout_ms or 600_000
    return Timeouts(
        connect=(config.connect_timeout_ms or 10_000) / 1000,
        first_byte=(config.first_byte_timeout_ms or general) / 1000,
        read=(config.idle_timeout_ms or general) / 1000,
        total=config.total_timeout_ms / 1000 if config.total_timeout_ms else None,
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


async def _read_capped(response: UpstreamResponse) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for data in response.iter_bytes():
        parts.append(data)
        size += len(data)
        if size >= MAX_ERROR_BODY:
            break
    await response.aclose()
    return b"".join(parts)[:MAX_ERROR_BODY]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


class Unavailable:
    """Stands in for an instance this build cannot serve; every call says why."""

    wire = ""

    def __init__(self, name: str, kind: str, reason: str) -> None:
        self.name = name
        self.kind = kind
        self.reason = reason
        self.default_model: str | None = None
        self.models: list[str] = []

    def _refuse(self) -> ProviderUnavailable:
        return ProviderUnavailable(self.reason, code="provider_unavailable")

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        raise self._refuse()

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        raise self._refuse()

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        raise self._refuse()

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        raise self._refuse()

    async def list_models(self) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "configured": False, "last_error": self.reason}

    async def aclose(self) -> None:
        return None


# -- helpers shared by adapters ------------------------------------------------------------------


_json = Decoder()


def tool_call_arguments(call: ToolCall, index: int) -> dict[str, Any]:
    """`call`'s arguments as a JSON object; InvalidRequest (at `messages[index]`) if they aren't."""
    why = "are not a JSON object"
    try:
        arguments = _json.decode(call.function.arguments or "{}")
    except NestingTooDeep as exc:
        arguments, why = None, f"are {exc}"
    except msgspec.DecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            f"messages[{index}]: the arguments of tool call {echo(call.id, 64)} {why}",
            param=f"messages[{index}].tool_calls",
        )
    return arguments


def embedding_base64(values: Sequence[float]) -> str:
    """`values` as OpenAI's `encoding_format: "base64"`: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
