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
from thanos_asgi.providers.base import HTTPProvider, Relayed
from thanos_asgi.providers.batches import each
from thanos_asgi.sanitize import MAX_DEPTH, Decoder, openers
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    PromptTokensDetails,
    ToolCallDelta,
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
_chunk = Decoder(ChatChunk)
_response = Decoder(ChatResponse)
_embeddings = Decoder(EmbeddingResponse)
_model_ids = Decoder(_ModelIds)
_encode = msgspec.json.Encoder().encode
_DONE = b"data: [DONE]\n\n"
_DONE_EVENT = _DONE[:-2]
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
                cut = _plain_prefix(complete)
                if cut == len(complete):
                    yield complete
                    continue
                out, end = self._sift(complete[cut:], relayed, drop_usage_chunk)
                if cut:
                    out = complete[:cut] + out
                if end is True:
                    yield out + _DONE
                    return
                if out:
                    yield out
                if isinstance(end, UpstreamError):
                    raise end
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
            if _has_usage(data):
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
        return self._batches(relayed)

    async def _batches(self, relayed: Relayed) -> AsyncIterator[list[ChatChunk]]:
        """The chunks of each relayed piece (one upstream read), as one list."""
        assert relayed.events is not None
        read = _Read()
        async for piece in relayed.events:
            chunks, end = read.piece(self, piece)
            if chunks:
                yield chunks
            if isinstance(end, UpstreamError):
                raise end
            if end:
                return

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


_LOOK = (b'"usage":{', b'"usage": {', b'"error":', b"data: [DONE]")  # events to take apart


def _plain_prefix(complete: bytes) -> int:
    """How many leading bytes of `complete` are whole events that go out untouched: each one
    `data: {...}` line with no usage or error in it (usage and `[DONE]` come last)."""
    cut = _first(complete, _LOOK)
    if cut < len(complete):
        cut = complete.rfind(b"\n\n", 0, cut) + 2  # back to the start of the marker's event
        complete = complete[:cut] if cut > 1 else b""
    plain = complete.startswith(b"data: {") and complete.count(b"\n") == 2 * (
        complete.count(b"\n\ndata: {") + 1
    )
    return len(complete) if plain else 0


def _first(data: bytes, markers: tuple[bytes, ...]) -> int:
    """Where the first of `markers` in `data` starts (`len(data)` when none is in it).
    Searching backwards: CPython's `rfind` is 2-2.5x faster than `find`/`in` over these
    reads (3.11); one backward pass in all."""
    cut = len(data)
    for marker in markers:
        at = data.rfind(marker, 0, cut)
        while at >= 0:  # back to its first occurrence
            cut = at
            at = data.rfind(marker, 0, at + len(marker) - 1)
    return cut


_USAGE = _LOOK[:2]


def _has_usage(data: bytes) -> bool:
    return data.rfind(b'"usage":{') >= 0 or data.rfind(b'"usage": {') >= 0


def _number_calls(deltas: list[ToolCallDelta], begun: int) -> int:
    """Give index-less tool-call deltas one: a delta naming a function starts the next call,
    a bare arguments fragment continues the last one. Returns the calls begun so far."""
    for delta in deltas:
        if delta.index >= 0:
            begun = max(begun, delta.index + 1)
        elif delta.function is not None and delta.function.name:
            delta.index, begun = begun, begun + 1
        else:
            delta.index = max(begun - 1, 0)
    return begun


class _Read:
    """One translated stream: the relayed pieces as canonical chunks."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0  # tool calls begun so far, for providers that send no index

    def piece(
        self, adapter: OpenAICompatible, piece: bytes
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """The chunks of `piece`, then True at `[DONE]`, or the error of an unreadable chunk
        (which ends the stream after what came before it)."""
        if len(piece) >= _AT_ONCE and piece.find(_JOIN) >= 0:
            return self.at_once(adapter, piece)
        return self._events(adapter, piece, [])

    def at_once(
        self, adapter: OpenAICompatible, piece: bytes
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """`piece` as `piece` reads it, its leading plain events decoded in one call when that
        call can vouch for them (`_plain_chunks`), the last few (usage, `[DONE]`) one by one."""
        cut = _plain_end(piece, _first(piece, _USAGE))
        chunks = _plain_chunks(piece[:cut])
        if chunks is None:
            return self._events(adapter, piece, [])
        if piece.rfind(b'"reasoning') >= 0 or piece.rfind(b'"tool_calls"') >= 0:
            for chunk in chunks:
                self._canonical(chunk)
        return self._events(adapter, piece[cut:], chunks) if cut < len(piece) else (chunks, False)

    def _events(
        self, adapter: OpenAICompatible, piece: bytes, chunks: list[ChatChunk]
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """`chunks`, then those of `piece`'s events read one by one."""
        # Once per piece, not per event: no event nests deeper than the piece has openers,
        # and no event before the piece's first usage marker has usage in it.
        decode = _chunk.unchecked if openers(piece) <= MAX_DEPTH else _chunk.decode
        usage_at, end = _first(piece, _USAGE), -2
        for raw in piece.split(b"\n\n")[:-1]:  # each relayed event ends in a blank line
            end += len(raw) + 2
            if raw == _DONE_EVENT:
                return chunks, True
            data = raw[6:] if raw.find(b"\n") < 0 else parse_block(raw).data
            try:
                chunk = decode(data)
            except msgspec.DecodeError as exc:
                error = UpstreamProtocolError(f"unreadable chunk: {exc}")
                return chunks, adapter.tag(error)
            self._canonical(chunk)
            if end > usage_at and _has_usage(data):  # as the relay read it (with quirks)
                try:
                    chunk.usage = adapter.usage_from(adapter._decode_meta(data))
                except UpstreamError as exc:
                    return chunks, exc
            chunks.append(chunk)
        return chunks, False

    def _canonical(self, chunk: ChatChunk) -> None:
        """`reasoning` as `reasoning_content`; every tool call delta with an index."""
        for choice in chunk.choices:
            delta = choice.delta
            if delta.reasoning and not delta.reasoning_content:
                delta.reasoning_content, delta.reasoning = delta.reasoning, None
            if delta.tool_calls:
                self.calls = _number_calls(delta.tool_calls, self.calls)


_JOIN = b"}\n\ndata: {"  # where one plain event ends and the next begins
# Reads shorter than this go event by event: the one decode's fixed cost (some twenty C calls)
# passes what it saves at five to six chunks of ~250 bytes (callgrind, 1 to 21 chunks a read).
_AT_ONCE = 1536


def _plain_end(piece: bytes, usage_at: int) -> int:
    """Where the events before the first with usage (or before a last `[DONE]`) end."""
    if usage_at < len(piece):
        at = piece.rfind(b"\n\n", 0, usage_at)
        return at + 2 if at >= 0 else 0
    return len(piece) - len(_DONE) if piece.endswith(_DONE) else len(piece)


def _plain_chunks(plain: bytes) -> list[ChatChunk] | None:
    """The chunks of `plain`'s events in one decode, or None when one decode cannot vouch
    for them. It can when each event is `data: {...}` on one line: then each event's `}` and
    the next's `{` meet across a line end, which JSON allows only between two values (not
    inside a value or a string), so no decoded value spans two events, and as many values
    as events means one each, as the event-by-event parse reads them."""
    if not plain.startswith(b"data: {") or not plain.endswith(b"}\n\n"):
        return None
    events = plain[6:-2].split(_JOIN)
    if len(events) < 2 or b"".join(events).find(b"\n") >= 0:  # (`find`: memchr, one pass)
        return None  # one event, or a line end inside one
    try:
        chunks = _chunk.lines(b"}\n{".join(events))
    except msgspec.DecodeError:
        return None  # event by event, to end the stream at the unreadable one
    return chunks if len(chunks) == len(events) else None
