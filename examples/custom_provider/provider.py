"""A provider of your own: the adapter for Acme's API (see `acme_server.py`), registered as
`kind = "acme"`. Importing this module is all it takes for configs to use it:

    [providers.acme]                     # the name implies the kind; or kind = "acme"
    base_url = "http://127.0.0.1:9000"   # default: the one registered below
    api_key = "${ACME_API_KEY}"          # default: the ACME_API_KEY variable

`HTTPProvider` brings the plumbing (base URL, key, timeouts, `send`/`read` raising the
gateway's exceptions for network errors and error statuses); the adapter only translates:
canonical request (OpenAI Chat Completions) -> Acme's JSON -> canonical response or chunks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec

from thanos_asgi.exceptions import InvalidRequest, UpstreamProtocolError
from thanos_asgi.providers import register_kind
from thanos_asgi.providers.base import HTTPProvider, Relayed
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    Delta,
    EmbeddingRequest,
    EmbeddingResponse,
    ResponseMessage,
    Usage,
)
from thanos_asgi.upstream.framing import iter_lines


class _Answer(msgspec.Struct):  # Acme's wire format, decoded with msgspec
    text: str
    tokens_in: int
    tokens_out: int


class _Line(msgspec.Struct):
    token: str = ""
    done: bool = False
    tokens_in: int = 0
    tokens_out: int = 0


_answer = msgspec.json.Decoder(_Answer)
_line = msgspec.json.Decoder(_Line)


class Acme(HTTPProvider):
    kind: ClassVar[str] = "acme"
    wire: ClassVar[str] = ""  # no client speaks Acme's format: no pass-through relay

    def auth_headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "x-acme-key": self.api_key or ""}

    def error_fields(self, body: bytes) -> tuple[str, str | None, str | None, str | None]:
        """Acme's errors are `{"message": ...}`: (message, type, code, param)."""
        try:
            return str(msgspec.json.decode(body).get("message", "")), None, None, None
        except (msgspec.DecodeError, AttributeError):
            return body[:200].decode("utf-8", "replace"), None, None, None

    def _body(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        lines = [f"{m.role}: {m.content}" for m in request.messages if isinstance(m.content, str)]
        body: dict[str, Any] = {"model": model, "prompt": "\n".join(lines), "stream": stream}
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        return msgspec.json.encode(body)

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        response = await self.send("POST", "/generate", self._body(request, model, stream=False))
        try:
            answer = _answer.decode(await self.read(response))
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None
        message = ResponseMessage(content=answer.text)
        return ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=[Choice(message=message, finish_reason="stop")],
            usage=_usage(answer.tokens_in, answer.tokens_out),
        )

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        # send() returns once the status has arrived and raises for errors: a refused request
        # fails here, before anything reaches the client, so the gateway can fall back.
        response = await self.send("POST", "/generate", self._body(request, model, stream=True))
        return self._chunks(response, model)

    async def _chunks(self, response: Any, model: str) -> AsyncIterator[ChatChunk]:
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            async for raw in iter_lines(response.iter_bytes()):
                line = _line.decode(raw)
                if line.done:
                    end = ChunkChoice(delta=Delta(), finish_reason="stop")
                    usage = _usage(line.tokens_in, line.tokens_out)
                    yield ChatChunk(id=chunk_id, model=model, choices=[end], usage=usage)
                    return
                delta = Delta(content=line.token)
                yield ChatChunk(id=chunk_id, model=model, choices=[ChunkChoice(delta=delta)])
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable stream line: {exc}")) from None
        finally:
            await response.aclose()  # also when the client goes away mid-stream
        raise self.tag(UpstreamProtocolError("the stream ended before it was complete"))

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        raise InvalidRequest("acme has no pass-through")  # never called: `wire` is ""

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        raise InvalidRequest(f"provider '{self.name}' has no embeddings")

    async def list_models(self) -> list[str]:
        return list(self.models) or ["acme-small", "acme-large"]


def _usage(prompt: int, completion: int) -> Usage:
    total = prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


register_kind(
    "acme",
    Acme,  # or "examples.custom_provider.provider:Acme", imported only when a config uses it
    names=("acme",),
    env_keys=("ACME_API_KEY",),
    base_url="http://127.0.0.1:9000",
    default_model="acme-small",
    model_prefixes=("acme-",),  # a bare "acme-large" routes here too
)
