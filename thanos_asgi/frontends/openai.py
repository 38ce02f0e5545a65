"""The OpenAI-compatible front-end codec: client JSON <-> canonical types, SSE framing."""

from __future__ import annotations

import time
import uuid
from typing import Any, TypeVar

import msgspec

from thanos_asgi.exceptions import InvalidRequest, ThanosError
from thanos_asgi.frontends.errors import openai_error
from thanos_asgi.frontends.sse import joined
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Message,
)

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_any = Decoder().decode


def decode_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        data = _decode_any(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


def convert(data: dict[str, Any], type_: type[T]) -> T:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc), param=_param(str(exc))) from None


def _param(message: str) -> str | None:
    _, at, path = message.rpartition("at `$.")
    return path.rstrip("`") if at else None


def decode_chat(body: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The client's JSON as a dict (relayed as is) and as a validated ChatRequest."""
    data = decode_json(body)
    request = convert(data, ChatRequest)
    if not request.model:
        raise InvalidRequest("`model` must name a model", param="model")
    if not request.messages:
        raise InvalidRequest("`messages` must contain at least one message", param="messages")
    return data, request


def wants_usage(request: ChatRequest | CompletionRequest) -> bool:
    options = request.stream_options
    return bool(options and options.include_usage)


def chunk_events(chunks: list[Any]) -> bytes:
    """Chunks (at least one) as SSE events, one `data:` each, in one encode."""
    return b"data: " + joined(chunks, b"\n\ndata: ") + b"\n\n"


def error_event(exc: ThanosError) -> bytes:
    return b"data: " + openai_error(exc) + b"\n\n"


DONE = b"data: [DONE]\n\n"


# -- legacy text completions ------------------------------------------------------------------


def completion_to_chat(request: CompletionRequest) -> ChatRequest:
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequest("send one prompt per request", param="prompt")
        prompt = prompt[0]
    if request.suffix or request.echo or request.logprobs:
        raise InvalidRequest("suffix, echo and logprobs are not supported", param="prompt")
    return ChatRequest(
        model=request.model,
        messages=[Message(role="user", content=prompt)],
        stream=request.stream,
        stream_options=request.stream_options,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        n=request.n,
        stop=request.stop,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        seed=request.seed,
        user=request.user,
    )


def chat_to_completion(response: ChatResponse) -> CompletionResponse:
    choices = [
        CompletionChoice(
            text=choice.message.content or "",
            index=choice.index,
            finish_reason=choice.finish_reason,
        )
        for choice in response.choices
    ]
    return CompletionResponse(
        id=_completion_id(response.id),
        created=response.created or int(time.time()),
        model=response.model,
        choices=choices,
        usage=response.usage,
    )


def completion_chunk(chunk: ChatChunk) -> CompletionResponse:
    choices = [
        CompletionChoice(
            text=choice.delta.content or "", index=choice.index, finish_reason=choice.finish_reason
        )
        for choice in chunk.choices
    ]
    return CompletionResponse(
        id=_completion_id(chunk.id),
        created=chunk.created or int(time.time()),
        model=chunk.model,
        choices=choices,
        usage=chunk.usage,
    )


def _completion_id(chat_id: str) -> str:
    if chat_id.startswith("chatcmpl-"):
        return "cmpl-" + chat_id[9:]
    return chat_id or f"cmpl-{uuid.uuid4().hex}"
