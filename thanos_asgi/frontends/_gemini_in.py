"""Gemini's native API in: a `generateContent` body -> a canonical ChatRequest.

Mapping (what the `google-genai` SDK sends; the reverse of the Gemini adapter's):
- `systemInstruction` -> one system message; `contents[]` role `user` / `model` -> user /
  assistant; text parts joined; `inlineData` -> an image part with a data URL (other media
  types -> a file part); `fileData` -> an image URL part; `thought: true` text ->
  `reasoning_content`, a `thoughtSignature` -> `reasoning_signature`.
- `functionCall` parts -> canonical tool calls (their `id`, else made up as
  `call_<turn>_<n>`); `functionResponse` parts -> `tool` messages answering the call of that
  id, else the latest unanswered call of that name; the response object is sent as JSON text.
- `tools[].functionDeclarations` (`parameters` or `parametersJsonSchema`) -> function tools;
  other tools (`googleSearch`, `codeExecution`, ...) cannot run elsewhere: 400 naming them.
- `toolConfig.functionCallingConfig.mode` AUTO / ANY / NONE -> auto / required / none; ANY
  with one allowed name -> that named function.
- `generationConfig`: temperature, topP, maxOutputTokens, stopSequences, candidateCount (n),
  seed, presence/frequency penalties one to one; `responseMimeType: application/json` ->
  `json_object`, with `responseSchema` / `responseJsonSchema` -> `json_schema`;
  `thinkingConfig.thinkingBudget` -> reasoning effort (0 none, <= 1024 low, <= 8192 medium,
  more or -1 high: the adapter's budgets map back to the same effort). `topK`,
  `safetySettings` and `cachedContent` are dropped.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.frontends.openai import convert, decode_json
from thanos_asgi.providers.gemini_types import Content, Part
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

_encode = msgspec.json.Encoder().encode
Choice = Literal["none", "auto", "required"]
_MODES: dict[str, Choice] = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}


class _In(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class Declaration(_In, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class CallingConfig(_In, kw_only=True):
    mode: str = "AUTO"
    allowed_function_names: list[str] | None = None


class InToolConfig(_In, kw_only=True):
    function_calling_config: CallingConfig | None = None


class InGeneration(_In, kw_only=True):
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    candidate_count: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: dict[str, Any] | None = None
    thinking_config: dict[str, Any] | None = None  # google-genai 3 sends its keys snake_case


class InBody(_In, kw_only=True):
    contents: list[Content] = []
    system_instruction: Content | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: InToolConfig | None = None
    generation_config: InGeneration | None = None


def decode_generate(body: bytes, model: str, *, stream: bool) -> ChatRequest:
    parsed = convert(decode_json(body), InBody)
    if not parsed.contents:
        raise InvalidRequest("`contents` must hold at least one turn", param="contents")
    messages = _system(parsed.system_instruction) + _turns(parsed.contents)
    request = ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        tools=_tools(parsed.tools),
        tool_choice=_choice(parsed.tool_config),
    )
    return _with_generation(request, parsed.generation_config)


def _system(instruction: Content | None) -> list[Message]:
    if instruction is None:
        return []
    text = "\n\n".join(part.text for part in instruction.parts if part.text)
    return [Message(role="system", content=text)] if text else []


def _turns(contents: list[Content]) -> list[Message]:
    out: list[Message] = []
    open_calls: list[ToolCall] = []
    for turn, content in enumerate(contents):
        if content.role == "model":
            out.append(_model_turn(content.parts, turn, open_calls))
            continue
        results = [p for p in content.parts if p.function_response is not None]
        out += [_result(part, open_calls, turn) for part in results]
        rest = [p for p in content.parts if p.function_response is None]
        if rest:
            out.append(Message(role="user", content=_user_content(rest)))
    return out


def _model_turn(parts: list[Part], turn: int, open_calls: list[ToolCall]) -> Message:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    signature: str | None = None
    for part in parts:
        signature = signature or part.thought_signature
        if part.function_call is not None:
            arguments = _encode(part.function_call.args or {}).decode()
            call_id = part.function_call.id or f"call_{turn}_{len(calls)}"
            function = FunctionCall(name=part.function_call.name, arguments=arguments)
            calls.append(ToolCall(id=call_id, function=function))
        elif part.text:
            (thoughts if part.thought else texts).append(part.text)
    open_calls += calls
    return Message(
        role="assistant",
        content="".join(texts) or None,
        tool_calls=calls or None,
        reasoning_content="".join(thoughts) or None,
        reasoning_signature=signature,
    )


def _result(part: Part, open_calls: list[ToolCall], turn: int) -> Message:
    response = part.function_response
    assert response is not None
    wanted = response.id
    call_id = f"call_{turn}_result"
    for index in range(len(open_calls) - 1, -1, -1):
        call = open_calls[index]
        if call.id == wanted or (wanted is None and call.function.name == response.name):
            call_id = open_calls.pop(index).id
            break
    return Message(role="tool", content=_encode(response.response).decode(), tool_call_id=call_id)


def _user_content(parts: list[Part]) -> str | list[ContentPart]:
    if all(part.text is not None for part in parts):
        return "".join(part.text or "" for part in parts)
    out: list[ContentPart] = []
    for part in parts:
        if part.text:
            out.append(TextPart(text=part.text))
        elif part.inline_data is not None:
            blob = part.inline_data
            url = f"data:{blob.mime_type};base64,{blob.data}"
            if blob.mime_type.startswith("image/"):
                out.append(ImagePart(image_url=ImageURL(url=url)))
            else:
                out.append(FilePart(file={"file_data": url, "filename": "attachment"}))
        elif part.file_data is not None:
            out.append(ImagePart(image_url=ImageURL(url=part.file_data.file_uri)))
    return out


def _tools(tools: list[dict[str, Any]] | None) -> list[Tool] | None:
    if not tools:
        return None
    out: list[Tool] = []
    for index, tool in enumerate(tools):
        others = sorted(set(tool) - {"functionDeclarations"})
        if others:
            raise InvalidRequest(
                f"the tool {others[0]!r} runs only on Google's servers, not through the gateway",
                param=f"tools[{index}]",
            )
        declared = _declarations(tool.get("functionDeclarations") or [], index)
        out += [_function(d) for d in declared]
    return out or None


def _declarations(raw: object, index: int) -> list[Declaration]:
    try:
        return msgspec.convert(raw, list[Declaration])
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition("at `$")[2].rstrip("`")
        message = f"tools[{index}].functionDeclarations: {exc}"
        raise InvalidRequest(message, param=f"tools[{index}].functionDeclarations{path}") from None


def _function(declared: Declaration) -> Tool:
    parameters = declared.parameters_json_schema or declared.parameters
    return Tool(
        function=FunctionDef(
            name=declared.name, description=declared.description, parameters=parameters
        )
    )


def _choice(config: InToolConfig | None) -> Choice | ToolChoice | None:
    calling = config.function_calling_config if config else None
    if calling is None:
        return None
    mode = calling.mode.upper()
    if mode not in _MODES:
        raise InvalidRequest(f"unknown function calling mode {calling.mode!r}", param="toolConfig")
    names = calling.allowed_function_names or []
    if mode == "ANY" and len(names) == 1:
        return ToolChoice(function=ToolChoiceFunction(name=names[0]))
    return _MODES[mode]


def _with_generation(request: ChatRequest, config: InGeneration | None) -> ChatRequest:
    if config is None:
        return request
    request.temperature = config.temperature
    request.top_p = config.top_p
    request.max_tokens = config.max_output_tokens
    request.stop = config.stop_sequences
    request.n = config.candidate_count
    request.seed = config.seed
    request.presence_penalty = config.presence_penalty
    request.frequency_penalty = config.frequency_penalty
    request.response_format = _format(config)
    request.reasoning_effort = _effort(config.thinking_config)
    return request


def _format(config: InGeneration) -> ResponseFormat | None:
    if config.response_mime_type != "application/json":
        return None
    schema = config.response_json_schema or config.response_schema
    if schema is None:
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", json_schema=JSONSchemaFormat(schema=schema))


def _effort(thinking: dict[str, Any] | None) -> str | None:
    thinking = thinking or {}
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    if budget is None:
        return None
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise InvalidRequest("`thinkingBudget` must be an integer", param="generationConfig")
    if budget == 0:
        return "none"
    if budget < 0:
        return "high"  # -1: "dynamic", as much as the model sees fit
    return "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"
