"""Anthropic's Messages API (`/v1/messages`): translated to and from canonical, or relayed.

Translation lives in `_anthropic_codec` (its docstring lists the mapping decisions); this
module is the HTTP side: API-key headers (`x-api-key`, `anthropic-version`; config `headers`
may add `anthropic-beta`), Anthropic's error body, SSE streams with `event:` names, and the
pass-through relay for `/v1/messages` clients, which reads only `message_start` and
`message_delta` (for usage) and forwards every event as it came, an `event: error` included.
An `event: error` on a translated stream raises (`overloaded_error` stands for 529, mapped to a
retryable 503); a stream that ends without `message_stop` is an UpstreamProtocolError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from thanos_asgi.context import current_context
from thanos_asgi.exceptions import (
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers import anthropic_types as api
from thanos_asgi.providers._anthropic_codec import (
    DEFAULT_MAX_TOKENS,
    Stream,
    chat_response,
    request_body,
)
from thanos_asgi.providers._login import ClaudeOAuth
from thanos_asgi.providers.anthropic_types import MessageResponse, Usage, chat_usage
from thanos_asgi.providers.base import Relayed
from thanos_asgi.providers.batches import each
from thanos_asgi.sanitize import MAX_DEPTH, Decoder, openers
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
)
from thanos_asgi.upstream import UpstreamResponse
from thanos_asgi.upstream.framing import SSEBuffer, parse_block, typed_events

T = TypeVar("T")
API_VERSION = "2023-06-01"

_response = Decoder(MessageResponse)
_models = Decoder(api.ModelPage)
_errors = Decoder(api.ErrorBody)
_EVENTS: dict[bytes, Decoder[Any]] = {
    b"content_block_delta": Decoder(api.ContentBlockDelta),
    b"content_block_start": Decoder(api.ContentBlockStart),
    b"content_block_stop": Decoder(api.ContentBlockStop),
    b"message_delta": Decoder(api.MessageDelta),
    b"message_start": Decoder(api.MessageStart),
}
_encode = msgspec.json.Encoder().encode


# -- the adapter --------------------------------------------------------------------------------


class Anthropic(ClaudeOAuth):  # an OAuth login when `uses_claude_login(config)`
    kind: ClassVar[str] = "anthropic"
    wire: ClassVar[str] = "anthropic"

    @property
    def prefix(self) -> str:
        """`/v1` unless the configured base URL already ends with it."""
        return "" if self.base_url.endswith("/v1") else "/v1"

    def auth_headers(self) -> dict[str, str]:
        """API-key auth; an OAuth login (Claude Pro/Max) would override this one method."""
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    async def request_headers(self) -> Mapping[str, str]:
        """The usual headers, plus the betas a `/v1/messages` client asked for."""
        headers = await super().request_headers()
        asked = current_context.get().anthropic_beta
        if not asked:
            return headers
        merged = {key: value for key, value in headers.items() if key.lower() != "anthropic-beta"}
        ours = (value for key, value in headers.items() if key.lower() == "anthropic-beta")
        merged["anthropic-beta"] = merge_betas(*ours, asked)
        return merged

    def error_fields(self, body: bytes) -> tuple[str, str | None, str | None, str | None]:
        """`{"type": "error", "error": {"type", "message"}}`; anything else as the base reads it."""
        try:
            error = _errors.decode(body).error
        except msgspec.DecodeError:
            error = None
        if error is None:
            return super().error_fields(body)
        return error.message, error.type, None, None

    # -- translated --------------------------------------------------------------------------

    def _body(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        limit = self.config.max_tokens or DEFAULT_MAX_TOKENS
        return _encode(request_body(request, model, stream=stream, max_tokens=limit))

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        body = self._body(request, model, stream=False)
        response = await self.send("POST", self.prefix + "/messages", body)
        return chat_response(self._parse(_response, await self.read(response)), model)

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return each(await self.open_batches(request, model))

    async def open_batches(
        self, request: ChatRequest, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        body = self._body(request, model, stream=True)
        response = await self.send("POST", self.prefix + "/messages", body)  # refusals raise here
        return self._batches(response, model)

    async def _batches(
        self, response: UpstreamResponse, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        """The chunks of each upstream read, as one list."""
        stream, events = Stream(model), SSEBuffer()
        try:
            async for data in response.iter_bytes():
                complete = events.feed(data)
                if not complete:
                    continue
                chunks, end = self._read(stream, complete)
                if chunks:
                    yield chunks
                if isinstance(end, UpstreamError):
                    try:
                        raise end
                    finally:  # (its traceback holds this frame: no cycle through `end`)
                        end = False
                if end:
                    return  # message_stop
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        finally:
            await response.aclose()
        raise self.tag(UpstreamProtocolError("the stream ended before message_stop"))

    def _read(
        self, stream: Stream, complete: bytes
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """The chunks of the events in `complete`, then True at message_stop, or the error
        that ends the stream (an `event: error`, an unreadable event) after what came before."""
        chunks: list[ChatChunk] = []
        # Once per read, not per event: no event nests deeper than the read has openers
        checked = openers(complete) > MAX_DEPTH
        for name, data in typed_events(complete):
            if name == b"message_stop":
                chunks.append(stream.usage_chunk())
                return chunks, True
            if name == b"error":
                return chunks, self._stream_error(data)
            decoder = _EVENTS.get(name)
            if decoder is None:
                continue  # ping and event types added later are skipped
            try:
                event = decoder.decode(data) if checked else decoder.unchecked(data)
                chunk = stream.feed(event)
            except msgspec.DecodeError as exc:
                error = UpstreamProtocolError(f"unreadable answer: {exc}")
                return chunks, self.tag(error)
            except UpstreamError as exc:
                return chunks, exc
            if chunk is not None:
                chunks.append(chunk)
        return chunks, False

    # -- pass-through ------------------------------------------------------------------------

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        body["model"] = model
        response = await self.send("POST", self.prefix + "/messages", _encode(body))
        if not stream:
            data = await self.read(response)
            message = self._parse(_response, data)
            return Relayed(model=message.model or model, body=data, usage=chat_usage(message.usage))
        relayed = Relayed(model=model)
        relayed.events = self._relay_events(response, relayed)
        return relayed

    async def _relay_events(
        self, response: UpstreamResponse, relayed: Relayed
    ) -> AsyncIterator[bytes]:
        """The provider's events as they came, one write per upstream read; only
        message_start and message_delta are decoded (usage)."""
        events, relay = SSEBuffer(), _Relay(self, relayed)
        try:
            async for chunk in response.iter_bytes():
                complete = events.feed(chunk)
                if not complete:
                    continue
                out, end = relay.sift(complete)
                if out:
                    yield out
                if isinstance(end, UpstreamError):
                    try:
                        raise end
                    finally:  # (its traceback holds this frame: no cycle through `end`)
                        end = False
                if end:
                    return  # message_stop, or an error event (already in the client's format)
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        finally:
            await response.aclose()
        raise self.tag(UpstreamProtocolError("the stream ended before message_stop"))

    # -- the rest ----------------------------------------------------------------------------

    def _stream_error(self, data: bytes) -> UpstreamStatusError:
        """An `event: error` after the 200: its type stands for a status (overloaded -> 529)."""
        try:
            error = _errors.decode(data).error
        except msgspec.DecodeError:
            error = None
        kind = error.type if error else "api_error"
        message = (error.message if error else "") or data[:200].decode("utf-8", "replace")
        return UpstreamStatusError(
            f"{self.name}: {message or 'error in stream'}",
            provider=self.name,
            upstream_status=api.ERROR_STATUS.get(kind, 500),
            upstream_type=kind,
        )

    def _parse(self, decoder: Decoder[T], data: bytes) -> T:
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None

    async def list_models(self) -> list[str]:
        response = await self.send("GET", self.prefix + "/models?limit=1000")
        return [model.id for model in self._parse(_models, await self.read(response)).data]

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        raise InvalidRequest("Anthropic has no embeddings API", param="model")


class _Relay:
    """One relayed stream: the events of each read as the client gets them, and the usage
    that message_start and message_delta report on the way."""

    __slots__ = ("adapter", "relayed", "usage")

    def __init__(self, adapter: Anthropic, relayed: Relayed) -> None:
        self.adapter, self.relayed = adapter, relayed
        self.usage: Usage | None = None

    def sift(self, complete: bytes) -> tuple[bytes, bool | UpstreamError]:
        """The events to forward, then True at the stream's end, or the error that makes
        an event unreadable (what came before it still goes out)."""
        out: list[bytes] = []
        for block in complete.split(b"\n\n"):
            event = parse_block(block) if block else None
            if event is None or not event.data:
                continue  # comments: the gateway sends its own keep-alives
            try:
                self.read(event.event, event.data)
            except UpstreamError as exc:
                return b"".join(out), exc
            out += (block, b"\n\n")
            if event.event in (b"message_stop", b"error"):
                return b"".join(out), True
        return b"".join(out), False

    def read(self, name: bytes, data: bytes) -> None:
        if name == b"message_start":
            self.usage = self.adapter._parse(_EVENTS[name], data).message.usage
        elif name == b"message_delta":
            later: Usage = self.adapter._parse(_EVENTS[name], data).usage
            if self.usage is None:
                self.usage = later
            else:
                self.usage.update(later)
        else:
            return
        self.relayed.usage = chat_usage(self.usage)


def merge_betas(*lists: str | None) -> str:
    """Comma-separated beta lists as one, each name once, in first-seen order."""
    names = (name.strip() for value in lists if value for name in value.split(","))
    return ",".join(dict.fromkeys(name for name in names if name))
