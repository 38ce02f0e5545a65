"""Ollama's native API (`/api/chat`, `/api/embed`, `/api/tags`), translated to and from canonical.

No client speaks Ollama's format, so nothing is relayed. Streams are NDJSON: one JSON object a
line, the last one `done: true` with the token counts; a failure after the status line is a
line `{"error": "..."}`. Tool calls arrive whole with their arguments as a JSON object and
(usually) no id, so the adapter names each call and encodes its arguments as the canonical
JSON string. Images must be inline: Ollama takes base64 data, not URLs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar, TypeVar

import msgspec

from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers._ollama_codec import (
    EmbedBody,
    InMessage,
    Stream,
    chat_body,
    completion_id,
    decode_embedded,
    decode_line,
    decode_tags,
    encode,
    finish,
    tool_calls,
    usage,
)
from thanos_asgi.providers.base import HTTPProvider, Relayed, embedding_base64
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ResponseMessage,
)
from thanos_asgi.upstream import UpstreamResponse
from thanos_asgi.upstream.framing import iter_lines

T = TypeVar("T")

# -- the adapter --------------------------------------------------------------------------------


class Ollama(HTTPProvider):
    kind: ClassVar[str] = "ollama"
    wire: ClassVar[str] = ""

    def auth_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:  # Ollama Cloud; a local server needs none
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        raise ProviderUnavailable("ollama does not relay")

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        body = encode(chat_body(request, model, stream=False))
        response = await self.send("POST", "/api/chat", body)
        line = self._parse(decode_line, await self.read(response))
        if line.error is not None:
            raise self._error_line(line.error)
        message = line.message or InMessage()
        calls = tool_calls(message.tool_calls)
        reply = ResponseMessage(
            content=message.content or (None if calls else ""),
            reasoning_content=message.thinking or None,
            tool_calls=calls or None,
        )
        return ChatResponse(
            id=completion_id(),
            created=int(time.time()),
            model=line.model or model,
            choices=[Choice(message=reply, finish_reason=finish(line.done_reason, bool(calls)))],
            usage=usage(line),
        )

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        body = encode(chat_body(request, model, stream=True))
        response = await self.send("POST", "/api/chat", body)  # refusals raise here
        return self._chunks(response, model)

    async def _chunks(self, response: UpstreamResponse, model: str) -> AsyncIterator[ChatChunk]:
        stream = Stream(model)
        try:
            async for data in iter_lines(response.iter_bytes()):
                line = self._parse(decode_line, data)
                if line.error is not None:
                    raise self._error_line(line.error)
                for chunk in stream.feed(line):
                    yield chunk
                if line.done:
                    return
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        finally:
            await response.aclose()
        raise self.tag(UpstreamProtocolError("the stream ended before it was complete"))

    def _error_line(self, error: Any) -> UpstreamError:
        if isinstance(error, dict):
            error = error.get("message") or error
        return self.tag(
            UpstreamStatusError(f"{self.name}: {error}", provider=self.name, upstream_status=500)
        )

    def _parse(self, decoder: Decoder[T], data: bytes) -> T:
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None

    async def list_models(self) -> list[str]:
        response = await self.send("GET", "/api/tags")
        return [model.name for model in self._parse(decode_tags, await self.read(response)).models]

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        try:
            texts = request.texts
        except TypeError:
            raise InvalidRequest(
                "ollama embeds text only; token-array input is not supported", param="input"
            ) from None
        body = encode(EmbedBody(model=model, input=texts, dimensions=request.dimensions))
        response = await self.send("POST", "/api/embed", body)
        result = self._parse(decode_embedded, await self.read(response))
        as_base64 = request.encoding_format == "base64"
        data = [
            Embedding(index=i, embedding=embedding_base64(vector) if as_base64 else vector)
            for i, vector in enumerate(result.embeddings)
        ]
        tokens = result.prompt_eval_count
        usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        return EmbeddingResponse(data=data, model=result.model or model, usage=usage)
