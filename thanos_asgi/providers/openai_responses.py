"""An OpenAI(-compatible) instance reached over the Responses API (`wire_api = "responses"`).

Responses clients are relayed untouched (only `model` changes; usage is read from the
completed response on the way); Chat Completions, Messages, Gemini and Ollama clients are
translated (`_responses_codec`). `responses_wire(OpenAI)` makes the variant of any
OpenAI-compatible adapter (its headers and quirks kept).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec

from thanos_asgi.exceptions import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from thanos_asgi.providers import _responses_codec as codec
from thanos_asgi.providers.base import Relayed
from thanos_asgi.providers.batches import close, each
from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.types import ChatChunk, ChatRequest, ChatResponse
from thanos_asgi.upstream import UpstreamResponse
from thanos_asgi.upstream.framing import SSEBuffer, parse_block

WIRE = "openai-responses"
_encode = msgspec.json.Encoder().encode
_answer = msgspec.json.Decoder(codec.Answer)
_event = msgspec.json.Decoder(codec.Event)
_ENDS = (b"response.completed", b"response.incomplete", b"response.failed", b'"type":"error"')


class ResponsesWire(OpenAICompatible):
    wire: ClassVar[str] = WIRE

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        body["model"] = model
        response = await self.send("POST", "/responses", _encode(body))
        if not stream:
            data = await self.read(response)
            answer = self._decode(_answer, data)
            return Relayed(model=answer.model or model, body=data, usage=codec.usage(answer.usage))
        relayed = Relayed(model=model)
        relayed.events = self._events(response, relayed)
        return relayed

    async def _events(self, response: UpstreamResponse, relayed: Relayed) -> AsyncIterator[bytes]:
        """Whole events as they came; the last one (completed, incomplete, failed, error) is
        read for usage or the error, and ends the stream."""
        events = SSEBuffer()
        try:
            async for piece in response.iter_bytes():
                complete = events.feed(piece)
                if not complete:
                    continue
                if not any(end in complete for end in _ENDS):
                    yield complete
                    continue
                out, error = self._last(complete, relayed)
                if out:
                    yield out
                if error is not None:
                    try:
                        raise error
                    finally:  # (its traceback holds this frame: no cycle through `error`)
                        error = None
                return
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        finally:
            await response.aclose()
        raise self.tag(UpstreamProtocolError("the stream ended before the response was complete"))

    def _last(self, complete: bytes, relayed: Relayed) -> tuple[bytes, UpstreamError | None]:
        out: list[bytes] = []
        for block in complete.split(b"\n\n"):
            data = parse_block(block).data
            if not data:
                continue
            out += (block, b"\n\n")
            event = self._decode(_event, data)
            if event.type in ("response.completed", "response.incomplete") and event.response:
                relayed.model = event.response.model or relayed.model
                relayed.usage = codec.usage(event.response.usage)
                return b"".join(out), None
            if event.type in ("error", "response.failed"):
                return b"".join(out), self._failure(event)
        return b"".join(out), None

    def _failure(self, event: codec.Event) -> UpstreamError:
        error = (event.response.error if event.response else None) or {}
        message = event.message or str(error.get("message") or "the response failed")
        return self.tag(
            UpstreamStatusError(
                f"{self.name}: {message}",
                provider=self.name,
                upstream_status=502,
                upstream_code=event.code or error.get("code"),
            )
        )

    def _decode(self, decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None

    # -- translated --------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        relayed = await self.relay(codec.request_body(request, model), model, stream=False)
        answer = self._decode(_answer, relayed.body)
        return codec.to_response(answer, model)

    async def open_batches(
        self, request: ChatRequest, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        relayed = await self.relay(codec.request_body(request, model), model, stream=True)
        return self._translated(relayed, model)

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return each(await self.open_batches(request, model))

    async def _translated(self, relayed: Relayed, model: str) -> AsyncIterator[list[ChatChunk]]:
        """The chunks of each upstream read's events, as one list; an unreadable event ends
        the stream after what came before it."""
        events, state = relayed.events, codec.StreamState(model)
        assert events is not None
        try:
            async for batch in events:
                chunks: list[ChatChunk] = []
                try:
                    for block in batch.split(b"\n\n"):
                        data = parse_block(block).data
                        chunk = state.chunk(self._decode(_event, data)) if data else None
                        if chunk is not None:
                            chunks.append(chunk)
                except UpstreamError:
                    if chunks:
                        yield chunks
                    raise
                if chunks:
                    yield chunks
        finally:
            await close(events)  # when this one is closed early, that one now too


def responses_wire(adapter: type[Any]) -> type[Any]:
    """The Responses-API variant of an OpenAI-compatible adapter class."""
    if not issubclass(adapter, OpenAICompatible):
        raise TypeError(f"{adapter.__name__} does not speak OpenAI's formats")
    if issubclass(adapter, ResponsesWire):
        return adapter
    return type(f"{adapter.__name__}Responses", (ResponsesWire, adapter), {})
