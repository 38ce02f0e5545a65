"""The OpenAI-compatible base: OpenAI itself, and every server that speaks its format.

Presets (xAI, DeepSeek, Groq, OpenRouter, ...) subclass this and change only facts: base URL,
headers, how usage is reported. Since the canonical format is OpenAI's, the relay path is the
main path here: translated calls reuse it and decode what comes back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec

from thanos_asgi.exceptions import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from thanos_asgi.providers._openai_stream import DONE, Read, has_usage, plain_prefix
from thanos_asgi.providers.base import HTTPProvider, Relayed
from thanos_asgi.providers.batches import close, each
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    PromptTokensDetails,
    Usage,
)
from thanos_asgi.upstream import UpstreamResponse
from thanos_asgi.upstream.framing import SSEBuffer, parse_block


class UpstreamUsage(Usage, kw_only=True):
    """Usage as OpenAI-compatible servers send it, with their extra counters."""

    prompt_cache_hit_tokens: int | None = None  # DeepSeek
    prompt_cache_miss_tokens: int | None = None


class _XGroq(msgspec.Struct):
    usage: UpstreamUsage | None = None


class Meta(msgspec.Struct):
    """The few fields of a response or chunk that routing and accounting read."""

    model: str = ""
    usage: UpstreamUsage | None = None
    choices: list[msgspec.Raw] | None = None
    error: Any = None
    x_groq: _XGroq | None = None


class _StreamError(msgspec.Struct):
    error: Any = None


class _ModelIds(msgspec.Struct):
    data: list[_ModelId] = []


class _ModelId(msgspec.Struct):
    id: str


_meta = Decoder(Meta)
_stream_error = Decoder(_StreamError)
_response = Decoder(ChatResponse)
_embeddings = Decoder(EmbeddingResponse)
_model_ids = Decoder(_ModelIds)
_encode = msgspec.json.Encoder().encode
_EXTENSIONS = ("reasoning_content", "reasoning_signature")


class OpenAICompatible(HTTPProvider):
    kind: ClassVar[str] = "openai-compatible"
    wire: ClassVar[str] = "openai"
    chat_path: ClassVar[str] = "/chat/completions"
    stream_usage: ClassVar[bool] = True  # accepts stream_options.include_usage

    def auth_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def usage_from(self, meta: Meta) -> Usage | None:
        """Canonical usage from what the server reported (presets add their quirks)."""
        usage = meta.usage
        if usage is None:
            return None
        if usage.prompt_cache_hit_tokens is not None and usage.prompt_tokens_details is None:
            usage.prompt_tokens_details = PromptTokensDetails(
                cached_tokens=usage.prompt_cache_hit_tokens
            )
        return usage

    # -- pass-through ----------------------------------------------------------------------

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        body["model"] = model
        drop_usage_chunk = False
        if stream and self.stream_usage:
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                options = options if isinstance(options, dict) else {}
                body["stream_options"] = {**options, "include_usage": True}
                drop_usage_chunk = True  # the client did not ask for it; accounting did
        response = await self.send("POST", self.chat_path, _encode(body))
        if not stream:
            data = await self.read(response)
            meta = self._decode_meta(data)
            return Relayed(model=meta.model or model, body=data, usage=self.usage_from(meta))
        relayed = Relayed(model=model)
        relayed.events = self._relay_events(response, relayed, drop_usage_chunk)
        return relayed

    async def _relay_events(
        self, response: UpstreamResponse, relayed: Relayed, drop_usage_chunk: bool
    ) -> AsyncIterator[bytes]:
        """The events as they came, one write per upstream read. A read holding only plain
        `data: {...}` chunks goes out untouched; one with usage, an error, `[DONE]` or other
        lines is taken apart."""
        events = SSEBuffer()
        try:
            async for chunk in response.iter_bytes():
                complete = events.feed(chunk)
                if not complete:
                    continue
                if relayed.raw:  # (a translation: `Read` looks at every event itself)
                    yield complete
                    continue
                cut = plain_prefix(complete)
                if cut == len(complete):
                    yield complete
                    continue
                out, end = self._sift(complete[cut:], relayed, drop_usage_chunk)
                if cut:
                    out = complete[:cut] + out
                if end is True:
                    yield out + DONE
                    return
                if out:
                    yield out
                if isinstance(end, UpstreamError):
                    try:
                        raise end
                    finally:  # (its traceback holds this frame: no cycle through `end`)
                        end = False
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        finally:
            await response.aclose()
        raise self.tag(UpstreamProtocolError("the stream ended before it was complete"))

    def _sift(
        self, complete: bytes, relayed: Relayed, drop_usage_chunk: bool
    ) -> tuple[bytes, bool | UpstreamError]:
        """The events of `complete` the client gets, then True at `[DONE]` or the stream's
        error (which ends it: what came before still goes out); reads usage on the way."""
        out: list[bytes] = []
        for block in complete.split(b"\n\n"):
            event = parse_block(block)
            data = event.data
            if not data:
                continue  # comments and keep-alives: the gateway sends its own
            if data == b"[DONE]":
                return b"".join(out), True
            if event.event == b"error" or data.find(b'"error":') >= 0:
                error = self._stream_error(data)
                if error is not None:
                    return b"".join(out), error
            if has_usage(data):
                meta = self._decode_meta(data)
                relayed.usage = self.usage_from(meta) or relayed.usage
                if drop_usage_chunk and meta.choices == []:
                    continue
            out += (block, b"\n\n")
        return b"".join(out), False

    def _decode_meta(self, data: bytes) -> Meta:
        try:
            return _meta.decode(data)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None

    def _stream_error(self, data: bytes) -> UpstreamError | None:
        """The error an `error` event reports (None for `"error": null`)."""
        try:
            error = _stream_error.decode(data).error
        except msgspec.DecodeError:
            error = data[:200].decode("utf-8", "replace")
        if not error:
            return None
        if not isinstance(error, dict):
            error = {"message": str(error)}
        status = error.get("status_code") or error.get("code")
        return self.tag(
            UpstreamStatusError(
                f"{self.name}: {error.get('message') or 'error in stream'}",
                provider=self.name,
                upstream_status=status if isinstance(status, int) and status >= 400 else 502,
                upstream_type=error.get("type"),
                upstream_code=str(error["code"]) if error.get("code") is not None else None,
            )
        )

    # -- translated (canonical in, canonical out) -------------------------------------------

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = msgspec.to_builtins(request)
        for message in body["messages"]:
            for key in _EXTENSIONS:
                message.pop(key, None)
        if not request.stream:
            body.pop("stream_options", None)
        elif self.stream_usage:
            body["stream_options"] = {"include_usage": True}  # canonical streams carry usage
        return body

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        relayed = await self.relay(self.request_body(request), model, stream=False)
        try:
            response = _response.decode(relayed.body)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None
        response.usage = relayed.usage
        for choice in response.choices:
            message = choice.message
            if message.reasoning and not message.reasoning_content:
                message.reasoning_content, message.reasoning = message.reasoning, None
        return response

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return each(await self.open_batches(request, model))

    async def open_batches(
        self, request: ChatRequest, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        relayed = await self.relay(self.request_body(request), model, stream=True)
        relayed.raw = True
        return self._batches(relayed)

    async def _batches(self, relayed: Relayed) -> AsyncIterator[list[ChatChunk]]:
        """The chunks of each relayed piece (one upstream read), as one list."""
        events, read = relayed.events, Read()
        assert events is not None
        try:
            async for piece in events:
                chunks, end = read.piece(self, piece)
                if chunks:
                    yield chunks
                if isinstance(end, UpstreamError):
                    try:
                        raise end
                    finally:  # (its traceback holds this frame: no cycle through `end`)
                        end = False
                if end:
                    return
        finally:
            await close(events)  # after `[DONE]` too: it would be left to the loop to close

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        body = msgspec.to_builtins(request)
        body["model"] = model
        response = await self.send("POST", "/embeddings", _encode(body))
        data = await self.read(response)
        try:
            return _embeddings.decode(data)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None

    async def list_models(self) -> list[str]:
        response = await self.send("GET", "/models")
        data = await self.read(response)
        try:
            return [model.id for model in _model_ids.decode(data).data]
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable model list: {exc}")) from None
