"""Ollama's native API in: `/api/chat`, `/api/generate` and `/api/embed` bodies -> canonical.

Mapping (what the `ollama` Python/JS clients, Open WebUI and Continue send):
- `messages[].images` (bare base64) -> image parts with a data URL, the media type read from
  the first bytes (PNG, JPEG, GIF, WebP; PNG when unknown); `thinking` -> `reasoning_content`.
- assistant `tool_calls` (arguments as a JSON object, no ids) -> canonical calls with made-up
  ids `call_<turn>_<n>`; a `tool` message answers the latest unanswered call of its
  `tool_name` (else the latest call), since Ollama's results name the function, not the call.
- `format: "json"` -> `response_format: json_object`; a JSON schema -> `json_schema`.
- `options`: temperature, top_p, seed, stop, presence/frequency penalties map one to one;
  `num_predict` -> `max_tokens` (-1 and -2, Ollama's "no limit" and "fill the context", ->
  none); the rest (num_ctx, top_k, repeat_penalty, mirostat, ...) only tune a local runner and
  are accepted and dropped. `keep_alive` is accepted and dropped.
- `think`: true -> reasoning effort "medium", "low" / "medium" / "high" as they are, false ->
  none asked for.
- `/api/generate`: `system` + `prompt` (+ `images`) become one system and one user message;
  `suffix` (fill-in-the-middle) and `context` (a local runner's token state) cannot cross to
  other providers and are refused with a 400; `raw` is accepted (there is no template here).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.frontends.openai import convert, decode_json
from thanos_asgi.types import (
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    FunctionCall,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)

_encode = msgspec.json.Encoder().encode
_EFFORTS = ("low", "medium", "high")
_MEDIA = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"))


class InFunction(msgspec.Struct, kw_only=True):
    name: str
    arguments: dict[str, Any] | str = {}


class InCall(msgspec.Struct, kw_only=True):
    function: InFunction
    id: str | None = None


class InMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[InCall] | None = None
    tool_name: str | None = None


class Options(msgspec.Struct, kw_only=True):
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    num_predict: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class ChatBody(msgspec.Struct, kw_only=True):
    model: str
    messages: list[InMessage] = []
    tools: list[Tool] | None = None
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: str | float | None = None


class GenerateBody(msgspec.Struct, kw_only=True):
    model: str
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None
    suffix: str | None = None
    context: list[int] | None = None
    raw: bool = False
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: str | float | None = None


class EmbedBody(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[str] = ""
    prompt: str | None = None  # the legacy /api/embeddings names it so
    dimensions: int | None = None
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None


def decode_chat(body: bytes) -> tuple[ChatBody, ChatRequest]:
    parsed = convert(decode_json(body), ChatBody)
    _require_model(parsed.model)
    if not parsed.messages:
        raise InvalidRequest("`messages` must contain at least one message", param="messages")
    request = ChatRequest(
        model=parsed.model,
        messages=_messages(parsed.messages),
        stream=parsed.stream,
        tools=parsed.tools or None,
        response_format=_format(parsed.format),
        reasoning_effort=_effort(parsed.think),
    )
    return parsed, _with_options(request, parsed.options)


def decode_generate(body: bytes) -> tuple[GenerateBody, ChatRequest]:
    parsed = convert(decode_json(body), GenerateBody)
    _require_model(parsed.model)
    if parsed.suffix:
        raise InvalidRequest("`suffix` (fill-in-the-middle) is not offered here", param="suffix")
    if parsed.context:
        raise InvalidRequest("`context` token state is not offered here", param="context")
    messages = [Message(role="system", content=parsed.system)] if parsed.system else []
    messages.append(Message(role="user", content=_content(parsed.prompt, parsed.images)))
    request = ChatRequest(
        model=parsed.model,
        messages=messages,
        stream=parsed.stream,
        response_format=_format(parsed.format),
        reasoning_effort=_effort(parsed.think),
    )
    return parsed, _with_options(request, parsed.options)


def decode_embed(body: bytes, *, legacy: bool = False) -> EmbeddingRequest:
    parsed = convert(decode_json(body), EmbedBody)
    _require_model(parsed.model)
    texts = parsed.prompt if legacy and parsed.prompt else parsed.input
    if texts in ("", []):
        raise InvalidRequest("`input` must not be empty", param="prompt" if legacy else "input")
    inputs: str | list[str | int | list[int]] = texts if isinstance(texts, str) else [*texts]
    return EmbeddingRequest(model=parsed.model, input=inputs, dimensions=parsed.dimensions)


def model_of(body: bytes) -> str:
    """`/api/show`: `model` (or the older `name`)."""
    data = decode_json(body)
    name = data.get("model") or data.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("`model` must name a model", param="model")
    return name


def _require_model(model: str) -> None:
    if not model:
        raise InvalidRequest("`model` must name a model", param="model")


def _messages(messages: list[InMessage]) -> list[Message]:
    out: list[Message] = []
    open_calls: list[ToolCall] = []  # made-up ids of calls not answered yet, oldest first
    for turn, message in enumerate(messages):
        if message.role == "tool":
            out.append(Message(role="tool", content=message.content, tool_call_id=""))
            out[-1].tool_call_id = _answered(open_calls, message.tool_name, turn)
        elif message.role == "assistant":
            calls = [_call(call, turn, n) for n, call in enumerate(message.tool_calls or ())]
            open_calls += calls
            out.append(
                Message(
                    role="assistant",
                    content=message.content or None,
                    tool_calls=calls or None,
                    reasoning_content=message.thinking or None,
                )
            )
        else:
            out.append(
                Message(role=message.role, content=_content(message.content, message.images))
            )
    return out


def _call(call: InCall, turn: int, n: int) -> ToolCall:
    arguments = call.function.arguments
    text = arguments if isinstance(arguments, str) else _encode(arguments).decode()
    name = call.function.name
    return ToolCall(
        id=call.id or f"call_{turn}_{n}", function=FunctionCall(name=name, arguments=text)
    )


def _answered(open_calls: list[ToolCall], name: str | None, turn: int) -> str:
    for index in range(len(open_calls) - 1, -1, -1):
        if name is None or open_calls[index].function.name == name:
            return open_calls.pop(index).id
    return f"call_{turn}_result"  # a result with no call before it: its own id


def _content(text: str, images: list[str] | None) -> str | list[ContentPart]:
    if not images:
        return text
    parts: list[ContentPart] = [TextPart(text=text)] if text else []
    for image in images:
        media = next((kind for magic, kind in _MEDIA if image.startswith(magic)), "image/png")
        if image.startswith("UklGR"):
            media = "image/webp"
        parts.append(ImagePart(image_url=ImageURL(url=f"data:{media};base64,{image}")))
    return parts


def _format(format: str | dict[str, Any] | None) -> ResponseFormat | None:
    if format == "json":
        return ResponseFormat(type="json_object")
    if isinstance(format, dict):
        schema = JSONSchemaFormat(name="response", schema=format)
        return ResponseFormat(type="json_schema", json_schema=schema)
    return None


def _effort(think: bool | str | None) -> str | None:
    if think is True:
        return "medium"
    return think if isinstance(think, str) and think in _EFFORTS else None


def _with_options(request: ChatRequest, options: Options | None) -> ChatRequest:
    if options is None:
        return request
    limit = options.num_predict
    if limit is not None and limit in (-1, -2):
        limit = None  # Ollama's "until done" and "fill the context"
    elif limit is not None and limit < 1:
        raise InvalidRequest(
            "`options.num_predict` must be at least 1", param="options.num_predict"
        )
    request.temperature = options.temperature
    request.top_p = options.top_p
    request.seed = options.seed
    request.stop = options.stop
    request.max_tokens = limit
    request.presence_penalty = options.presence_penalty
    request.frequency_penalty = options.frequency_penalty
    return request
