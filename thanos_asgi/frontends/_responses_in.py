"""The Responses API in: a request body (and the conversation it continues) -> canonical.

Mapping:
- `instructions` -> a system message first (not carried to the next turn, as OpenAI does);
  `input` as a string -> one user message; message items (roles user, system, developer,
  assistant; parts `input_text` / `output_text`, `input_image`, `input_file`) -> messages.
- `function_call` items -> tool calls on an assistant message (consecutive calls, and the
  text before them, make one assistant turn); `function_call_output` -> a `tool` message;
  `reasoning` items -> `reasoning_content` of the next assistant turn (summary texts joined).
  `item_reference` and other item types -> 400 naming the type.
- `tools`: function tools -> function tools; built-in tools (web search, file search,
  computer use, code interpreter, ...) run only where the request is relayed to an instance
  with `wire_api = "responses"`; anywhere else: 400 naming the tool.
  `tool_choice` auto / none / required / {"type": "function", "name"}; `parallel_tool_calls`.
- `text.format` text / json_object / json_schema -> `response_format`; `reasoning.effort` ->
  `reasoning_effort`; `max_output_tokens` -> `max_completion_tokens`; temperature, top_p,
  user, metadata as they are. `truncation` and `include` are accepted and dropped;
  `background: true` is refused (the gateway answers in the request).
"""

from __future__ import annotations

from typing import Any, Literal

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.frontends._responses_types import InputItem, InputPart, RequestBody
from thanos_asgi.types import (
    ChatRequest,
    ContentPart,
    FilePart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
)

Choice = Literal["none", "auto", "required"]
_CHOICES: tuple[Choice, ...] = ("none", "auto", "required")


def conversation(body: RequestBody, earlier: list[Message]) -> list[Message]:
    """The turns so far (without instructions): what the store keeps for the next turn."""
    if isinstance(body.input, str):
        if not body.input and not earlier:
            raise InvalidRequest("`input` must not be empty", param="input")
        return [*earlier, Message(role="user", content=body.input)] if body.input else earlier
    messages = list(earlier)
    pending_reasoning: list[str] = []
    for index, item in enumerate(body.input):
        _add(messages, item, index, pending_reasoning)
    if not messages:
        raise InvalidRequest("`input` must hold at least one item", param="input")
    return messages


def to_chat(body: RequestBody, turns: list[Message]) -> ChatRequest:
    if body.background:
        raise InvalidRequest("`background` responses are not offered here", param="background")
    system = [Message(role="system", content=body.instructions)] if body.instructions else []
    return ChatRequest(
        model=body.model,
        messages=[*system, *turns],
        stream=body.stream,
        temperature=body.temperature,
        top_p=body.top_p,
        max_completion_tokens=body.max_output_tokens,
        user=body.user,
        metadata=body.metadata,
        tools=_tools(body.tools),
        tool_choice=_choice(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=_format(body),
        reasoning_effort=body.reasoning.effort if body.reasoning else None,
    )


def _add(messages: list[Message], item: InputItem, index: int, reasoning: list[str]) -> None:
    where = f"input[{index}]"
    if item.type == "message":
        _message(messages, item, where, reasoning)
    elif item.type == "function_call":
        if not item.call_id or not item.name:
            raise InvalidRequest("a function_call needs `call_id` and `name`", param=where)
        call = ToolCall(
            id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments or "")
        )
        _assistant(messages, reasoning).tool_calls = [*(messages[-1].tool_calls or ()), call]
    elif item.type == "function_call_output":
        if not item.call_id:
            raise InvalidRequest("a function_call_output needs `call_id`", param=where)
        output = item.output if isinstance(item.output, str) else _joined(item.output or [])
        messages.append(Message(role="tool", content=output, tool_call_id=item.call_id))
    elif item.type == "reasoning":
        reasoning += [part.text for part in item.summary or () if part.text]
    else:
        raise InvalidRequest(f"input items of type {item.type!r} are not offered here", param=where)


def _message(messages: list[Message], item: InputItem, where: str, reasoning: list[str]) -> None:
    role = item.role
    if role is None:
        raise InvalidRequest("a message item needs a `role`", param=where)
    content = item.content if item.content is not None else ""
    if role == "assistant":
        text = content if isinstance(content, str) else _joined(content)
        turn = _assistant(messages, reasoning)
        turn.content = (turn.content or "") + text if isinstance(turn.content, str) else text
        return
    parts = content if isinstance(content, str) else _parts(content, where)
    messages.append(Message(role="system" if role == "developer" else role, content=parts))


def _assistant(messages: list[Message], reasoning: list[str]) -> Message:
    """The assistant turn being built: the last message if it is one without results yet."""
    if not messages or messages[-1].role != "assistant":
        messages.append(Message(role="assistant"))
    if reasoning:
        messages[-1].reasoning_content = "".join(reasoning)
        reasoning.clear()
    return messages[-1]


def _joined(parts: list[InputPart]) -> str:
    return "".join(part.text or "" for part in parts)


def _parts(parts: list[InputPart], where: str) -> str | list[ContentPart]:
    if all(part.type in ("input_text", "output_text", "text") for part in parts):
        return _joined(parts)
    out: list[ContentPart] = []
    for n, part in enumerate(parts):
        if part.type in ("input_text", "output_text", "text"):
            out.append(TextPart(text=part.text or ""))
        elif part.type == "input_image" and part.image_url:
            out.append(ImagePart(image_url=ImageURL(url=part.image_url, detail=part.detail)))
        elif part.type == "input_file" and part.file_data:
            file = {"file_data": part.file_data, "filename": part.filename or "attachment"}
            out.append(FilePart(file=file))
        else:
            message = f"content parts of type {part.type!r} are not offered here"
            raise InvalidRequest(message, param=f"{where}.content[{n}]")
    return out


def built_in(tools: list[dict[str, Any]] | None) -> list[str]:
    """The built-in tools asked for (web search, file search, ...): only a Responses relay
    can run them."""
    return [str(tool.get("type"))[:60] for tool in tools or () if tool.get("type") != "function"]


def _tools(tools: list[dict[str, Any]] | None) -> list[Tool] | None:
    out: list[Tool] = []
    for index, tool in enumerate(tools or ()):
        if tool.get("type") != "function":
            continue  # built-in: relayed, or refused before (`built_in`)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a function tool needs a `name`", param=f"tools[{index}].name")
        definition = FunctionDef(
            name=name,
            description=tool.get("description"),
            parameters=tool.get("parameters"),
            strict=tool.get("strict"),
        )
        out.append(Tool(function=definition))
    return out or None


def _choice(choice: str | dict[str, Any] | None) -> Choice | ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        for known in _CHOICES:
            if choice == known:
                return known
        raise InvalidRequest(f"unknown tool_choice {choice[:60]!r}", param="tool_choice")
    name = choice.get("name")
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest("tool_choice names a function tool here", param="tool_choice")
    return ToolChoice(function=ToolChoiceFunction(name=name))


def _format(body: RequestBody) -> ResponseFormat | None:
    format = body.text.format if body.text else None
    if format is None or format.type == "text":
        return None
    if format.type == "json_object":
        return ResponseFormat(type="json_object")
    schema = JSONSchemaFormat(
        name=format.name or "response",
        schema=format.schema,
        description=format.description,
        strict=format.strict,
    )
    return ResponseFormat(type="json_schema", json_schema=schema)
