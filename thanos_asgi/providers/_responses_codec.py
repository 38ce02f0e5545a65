"""Canonical <-> the OpenAI Responses API, for instances with `wire_api = "responses"`.

Requests (canonical -> Responses):
- system / developer / user / assistant messages -> message items (user parts: `input_text`,
  `input_image`, `input_file`; assistant text -> `output_text`); assistant tool calls ->
  `function_call` items (`call_id` = the canonical id); `tool` messages ->
  `function_call_output`. Reasoning text from earlier turns is not sent: Responses takes back
  only its own (encrypted) reasoning items.
- function tools -> flat `{"type": "function", "name", ...}` tools; `tool_choice` likewise;
  `response_format` -> `text.format`; `reasoning_effort` -> `reasoning.effort`; the output
  limit -> `max_output_tokens`; temperature, top_p, parallel_tool_calls, user, metadata as
  they are; `store: false` (the gateway keeps no OpenAI-side conversations for translated
  requests). `seed`, penalties, `logit_bias` and `logprobs` have no Responses field and are
  dropped; `stop` and `n` > 1 change the answer and are refused (400); audio input too.

Answers (Responses -> canonical): `message` items -> content, `function_call` items -> tool
calls, `reasoning` summaries -> `reasoning_content`; status `incomplete` for
max_output_tokens -> finish `length`, for content_filter -> `content_filter`; usage from
`input_tokens` / `output_tokens` and their details. Streams: text, reasoning and arguments
deltas -> chunk deltas; a `function_call` item added -> a tool call opened; the completed
(or incomplete) response -> the finish and usage; `error` / `response.failed` -> an error.
"""

from __future__ import annotations

from typing import Any

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.types import (
    AudioPart,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    ContentPart,
    Delta,
    FilePart,
    FunctionCall,
    FunctionCallDelta,
    ImagePart,
    Message,
    PromptTokensDetails,
    ResponseMessage,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def request_body(request: ChatRequest, model: str) -> dict[str, Any]:
    if request.stop_list:
        raise InvalidRequest("`stop` has no Responses API equivalent", param="stop")
    if request.n is not None and request.n > 1:
        raise InvalidRequest("the Responses API answers once: `n` must be 1", param="n")
    body: dict[str, Any] = {"model": model, "input": _input(request.messages), "store": False}
    optional: dict[str, Any] = {
        "stream": request.stream or None,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_output_tokens": request.output_limit,
        "parallel_tool_calls": request.parallel_tool_calls,
        "user": request.user,
        "metadata": request.metadata,
        "tools": [_tool(t) for t in request.tools] if request.tools else None,
        "tool_choice": _choice(request.tool_choice),
        "reasoning": {"effort": request.reasoning_effort} if request.reasoning_effort else None,
        "text": _text(request),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def _input(messages: list[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if message.role == "tool":
            output = message.content if isinstance(message.content, str) else _texts(message)
            items.append(
                {"type": "function_call_output", "call_id": message.tool_call_id, "output": output}
            )
        elif message.role == "assistant":
            if message.content:
                text = {"type": "output_text", "text": _texts(message)}
                items.append({"type": "message", "role": "assistant", "content": [text]})
            items += [_call(call) for call in message.tool_calls or ()]
        else:
            role = "developer" if message.role == "developer" else message.role
            if role == "function":
                raise InvalidRequest("`function` messages are not offered", param="messages")
            content = _parts(message.content, index)
            items.append({"type": "message", "role": role, "content": content})
    return items


def _texts(message: Message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content or () if isinstance(part, TextPart))


def _parts(content: str | list[ContentPart] | None, index: int) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ImagePart):
            image = {"type": "input_image", "image_url": part.image_url.url}
            parts.append({**image, "detail": part.image_url.detail or "auto"})
        elif isinstance(part, FilePart):
            parts.append({"type": "input_file", **part.file})
        elif isinstance(part, AudioPart):
            raise InvalidRequest(
                "audio input has no Responses API equivalent", param=f"messages[{index}]"
            )
    return parts


def _call(call: ToolCall) -> dict[str, Any]:
    function = call.function
    return {
        "type": "function_call",
        "call_id": call.id,
        "name": function.name,
        "arguments": function.arguments,
    }


def _tool(tool: Any) -> dict[str, Any]:
    function = tool.function
    flat = {"type": "function", "name": function.name, "description": function.description}
    flat |= {"parameters": function.parameters, "strict": function.strict}
    return {key: value for key, value in flat.items() if value is not None}


def _choice(choice: str | ToolChoice | None) -> str | dict[str, Any] | None:
    if isinstance(choice, ToolChoice):
        return {"type": "function", "name": choice.function.name}
    return choice


def _text(request: ChatRequest) -> dict[str, Any] | None:
    format = request.response_format
    if format is None or format.type == "text":
        return None
    if format.type == "json_object" or format.json_schema is None:
        return {"format": {"type": "json_object"}}
    schema = format.json_schema
    shape: dict[str, Any] = {"type": "json_schema", "name": schema.name, "schema": schema.schema}
    shape |= {"description": schema.description, "strict": schema.strict}
    return {"format": {key: value for key, value in shape.items() if value is not None}}


# -- answers ------------------------------------------------------------------------------------


class Answer(msgspec.Struct, kw_only=True):
    id: str = ""
    model: str = ""
    status: str = "completed"
    output: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def usage(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    prompt, completion = int(data.get("input_tokens") or 0), int(data.get("output_tokens") or 0)
    cached = (data.get("input_tokens_details") or {}).get("cached_tokens")
    reasoning = (data.get("output_tokens_details") or {}).get("reasoning_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(data.get("total_tokens") or prompt + completion),
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning),
    )


def finish(answer: Answer, called: bool) -> str:
    if answer.status == "incomplete":
        reason = (answer.incomplete_details or {}).get("reason")
        return _INCOMPLETE.get(str(reason), "length")
    return "tool_calls" if called else "stop"


def to_response(answer: Answer, model: str) -> ChatResponse:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for item in answer.output:
        kind = item.get("type")
        if kind == "message":
            texts += [p.get("text") or "" for p in item.get("content") or () if isinstance(p, dict)]
        elif kind == "function_call":
            function = FunctionCall(
                name=str(item.get("name")), arguments=str(item.get("arguments") or "")
            )
            calls.append(ToolCall(id=str(item.get("call_id") or item.get("id")), function=function))
        elif kind == "reasoning":
            thoughts += [
                s.get("text") or "" for s in item.get("summary") or () if isinstance(s, dict)
            ]
    message = ResponseMessage(
        content="".join(texts) or None,
        tool_calls=calls or None,
        reasoning_content="".join(thoughts) or None,
    )
    choice = Choice(message=message, finish_reason=finish(answer, bool(calls)))
    return ChatResponse(
        id=answer.id, model=answer.model or model, choices=[choice], usage=usage(answer.usage)
    )


def _texts_of(parts: Any) -> list[str]:
    return [str(p.get("text") or "") for p in parts or () if isinstance(p, dict)]


class Event(msgspec.Struct, kw_only=True):
    type: str = ""
    delta: str | None = None
    item: dict[str, Any] | None = None
    item_id: str | None = None
    response: Answer | None = None
    message: str | None = None
    code: str | None = None


class StreamState:
    """Responses events -> canonical chunks, one event at a time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.calls: dict[str, int] = {}  # item id -> tool call index

    def chunk(self, event: Event) -> ChatChunk | None:
        kind = event.type
        if kind == "response.output_text.delta" and event.delta:
            return self._delta(Delta(content=event.delta))
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return self._delta(Delta(reasoning_content=event.delta)) if event.delta else None
        if (
            kind == "response.output_item.added"
            and (event.item or {}).get("type") == "function_call"
        ):
            return self._opened(event.item or {})
        if kind == "response.function_call_arguments.delta" and event.delta:
            index = self.calls.get(event.item_id or "", max(len(self.calls) - 1, 0))
            call = ToolCallDelta(index=index, function=FunctionCallDelta(arguments=event.delta))
            return self._delta(Delta(tool_calls=[call]))
        if kind in ("response.completed", "response.incomplete") and event.response:
            done = ChunkChoice(
                delta=Delta(), finish_reason=finish(event.response, bool(self.calls))
            )
            return ChatChunk(model=self.model, choices=[done], usage=usage(event.response.usage))
        return None

    def _opened(self, item: dict[str, Any]) -> ChatChunk:
        index = self.calls[str(item.get("id"))] = len(self.calls)
        function = FunctionCallDelta(
            name=str(item.get("name")), arguments=item.get("arguments") or ""
        )
        call_id = str(item.get("call_id") or item.get("id"))
        return self._delta(
            Delta(
                tool_calls=[
                    ToolCallDelta(index=index, id=call_id, type="function", function=function)
                ]
            )
        )

    def _delta(self, delta: Delta) -> ChatChunk:
        return ChatChunk(model=self.model, choices=[ChunkChoice(delta=delta)])
