"""Ollama's native chat and embedding formats <-> canonical: the wire types, request building,
whole answers and the NDJSON stream's state; pure functions, no I/O. The adapter is `ollama.py`.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.ids import unique_hex
from thanos_asgi.providers.base import tool_call_arguments
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    AudioPart,
    ChatChunk,
    ChatRequest,
    ChunkChoice,
    ContentPart,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

# -- wire types: what we send ------------------------------------------------------------------


class _Out(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class _Function(_Out, kw_only=True):
    name: str = ""
    arguments: Any = None  # a JSON object


class _Call(_Out, kw_only=True):
    function: _Function
    id: str | None = None  # newer servers may name their calls; we send none


class _Message(_Out, kw_only=True):
    role: str
    content: str
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[_Call] | None = None
    tool_name: str | None = None


class _Options(_Out, kw_only=True):
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    num_predict: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class _ChatBody(_Out, kw_only=True):
    model: str
    messages: list[_Message]
    stream: bool  # no default, so always sent: Ollama streams unless told not to
    tools: list[Tool] | None = None  # Ollama's tool schema is OpenAI's
    format: str | dict[str, Any] | None = None
    options: _Options | None = None
    think: bool | str | None = None


class EmbedBody(_Out, kw_only=True):
    model: str
    input: list[str]
    dimensions: int | None = None


# -- wire types: what we read -------------------------------------------------------------------


class InMessage(msgspec.Struct):
    content: str = ""
    thinking: str = ""
    tool_calls: list[_Call] | None = None


class _Line(msgspec.Struct):
    """A whole non-stream answer, one stream line, or an error line."""

    model: str = ""
    message: InMessage | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    error: Any = None


class _Tag(msgspec.Struct):
    name: str


class _Tags(msgspec.Struct):
    models: list[_Tag] = []


class _Embedded(msgspec.Struct):
    model: str = ""
    embeddings: list[list[float]] = []
    prompt_eval_count: int = 0


decode_line = Decoder(_Line)
decode_tags = Decoder(_Tags)
decode_embedded = Decoder(_Embedded)
encode = msgspec.json.Encoder().encode

_ROLES = {"developer": "system", "function": "tool"}  # the rest are Ollama's roles too
_EFFORTS = ("low", "medium", "high")


# -- canonical -> Ollama ------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str, *, stream: bool) -> _ChatBody:
    """The `/api/chat` body for a canonical request; raises InvalidRequest for what won't map."""
    send_tools = request.tools and request.tool_choice != "none"
    return _ChatBody(
        model=model,
        messages=_messages(request.messages),
        stream=stream,
        tools=request.tools if send_tools else None,
        format=_format(request.response_format),
        options=_options(request),
        think=_think(request.reasoning_effort),
    )


def _messages(messages: list[Message]) -> list[_Message]:
    tool_names: dict[str, str] = {}  # call id -> function name, for `tool_name` on results
    out = []
    for index, message in enumerate(messages):
        for call in message.tool_calls or ():
            tool_names[call.id] = call.function.name
        out.append(_message(message, index, tool_names))
    return out


def _message(message: Message, index: int, tool_names: dict[str, str]) -> _Message:
    role = _ROLES.get(message.role, message.role)
    text, images = _content(message.content, index)
    calls = [_call(call, index) for call in message.tool_calls or ()]
    tool_name = None
    if role == "tool":
        tool_name = tool_names.get(message.tool_call_id or "") or message.name
    return _Message(
        role=role,
        content=text,
        thinking=message.reasoning_content if role == "assistant" else None,
        images=images or None,
        tool_calls=calls or None,
        tool_name=tool_name,
    )


def _content(content: str | list[ContentPart] | None, index: int) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            images.append(_image(part.image_url.url, index))
        else:
            kind = "audio" if isinstance(part, AudioPart) else "file"
            raise InvalidRequest(
                f"messages[{index}]: ollama does not accept {kind} input",
                param=f"messages[{index}].content",
            )
    return "\n".join(texts), images


def _image(url: str, index: int) -> str:
    header, comma, data = url.partition(",")
    if comma and header.startswith("data:image/") and header.endswith(";base64"):
        return data
    if url.startswith(("http://", "https://")):
        reason = "ollama takes inline images only; send a data:image/...;base64 URL, not a link"
    else:
        reason = "an image must be a data:image/...;base64 URL"
    raise InvalidRequest(f"messages[{index}]: {reason}", param=f"messages[{index}].content")


def _call(call: ToolCall, index: int) -> _Call:
    arguments = tool_call_arguments(call, index)
    return _Call(function=_Function(name=call.function.name, arguments=arguments))


def _format(response_format: ResponseFormat | None) -> str | dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    schema = response_format.json_schema
    if response_format.type == "json_schema" and schema and schema.schema is not None:
        return schema.schema
    return "json"


def _options(request: ChatRequest) -> _Options | None:
    options = _Options(
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=request.stop_list or None,
        num_predict=request.output_limit,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )
    return options if any(v is not None for v in msgspec.structs.astuple(options)) else None


def _think(effort: str | None) -> bool | str | None:
    if effort is None or effort in _EFFORTS:
        return effort
    if effort in ("none", "minimal"):
        return False if effort == "none" else "low"
    raise InvalidRequest(
        f"reasoning_effort {effort!r} has no Ollama equivalent; use none, low, medium or high",
        param="reasoning_effort",
    )


# -- Ollama -> canonical ------------------------------------------------------------------------


def tool_calls(calls: list[_Call] | None) -> list[ToolCall]:
    return [
        ToolCall(
            id=call.id or f"call_{unique_hex(96)}",
            function=FunctionCall(name=call.function.name, arguments=_arguments(call)),
        )
        for call in calls or ()
    ]


def _arguments(call: _Call) -> str:
    value = call.function.arguments
    return value if isinstance(value, str) else encode(value or {}).decode()


def finish(done_reason: str | None, called_tools: bool) -> str:
    """`stop` becomes `tool_calls` after tool calls; other reasons pass through unchanged."""
    reason = done_reason or "stop"  # servers before mid-2024 sent no done_reason
    return "tool_calls" if reason == "stop" and called_tools else reason


def usage(line: _Line) -> Usage:
    prompt, completion = line.prompt_eval_count, line.eval_count
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def completion_id() -> str:
    return f"chatcmpl-{unique_hex(96)}"


class Stream:
    """One stream's state: its id, whether the role went out, how many tool calls so far."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self.role_sent = False
        self.calls = 0

    def feed(self, line: _Line) -> list[ChatChunk]:
        self.model = line.model or self.model
        out: list[ChatChunk] = []
        message = line.message
        if message and (message.content or message.thinking or message.tool_calls):
            delta = Delta(
                content=message.content or None,
                reasoning_content=message.thinking or None,
                tool_calls=self._deltas(message.tool_calls),
            )
            out.append(self._chunk(delta))
        if line.done:
            out.append(self._chunk(Delta(), finish(line.done_reason, self.calls > 0)))
            out.append(self._envelope([], usage(line)))  # the gateway drops it if not asked
        return out

    def _deltas(self, calls: list[_Call] | None) -> list[ToolCallDelta] | None:
        deltas = []
        for call in tool_calls(calls):
            function = FunctionCallDelta(name=call.function.name, arguments=call.function.arguments)
            deltas.append(
                ToolCallDelta(index=self.calls, id=call.id, type="function", function=function)
            )
            self.calls += 1
        return deltas or None

    def _chunk(self, delta: Delta, finish_reason: str | None = None) -> ChatChunk:
        if not self.role_sent:
            delta.role, self.role_sent = "assistant", True
        return self._envelope([ChunkChoice(delta=delta, finish_reason=finish_reason)])

    def _envelope(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )
