"""Gemini's `generateContent` format <-> canonical, shared by the Gemini API and Vertex AI.

Request building and whole-answer mapping; pure functions, no I/O. The wire types are in
`gemini_types` and the made-up ids in `_gemini_ids`; tool and response schemas are cleaned in
`_gemini_schema`, streams decoded in `_gemini_stream`.
Decisions worth knowing:

* Roles: system/developer -> `systemInstruction`; user and tool results -> "user"; assistant ->
  "model". Consecutive turns of one role are merged (so parallel tool results form one turn).
* Tool results -> `functionResponse{name, response}`: the name comes from the earlier call with
  that id (or the message's `name`); `response` is the content parsed when it is a JSON object,
  else `{"content": <text>}`.
* Gemini's function calls carry no id. Ours are `call_<tag>_<n>`: `tag` is 12 hex digits of the
  SHA-256 of the `responseId` (or of the answer's bytes when there is none), `n` counts calls in
  the answer, so ids are stable per answer and unique across answers.
* Thought signatures: a function call's `thoughtSignature` rides in its id, after `_ts_`, in
  URL-safe base64 without padding (`call_<tag>_<n>_ts_<sig>`), because every client echoes
  tool-call ids back verbatim while many drop unknown message fields; it is restored to standard
  base64 on the way back. A signature on any other part (text, thought) becomes the message's
  `reasoning_signature` and goes back on the turn's text part (or on its first function call
  when that has none of its own).
* Thought text (`reasoning_content`) is returned to the client but not sent back: Gemini keeps
  its reasoning in the signatures.
* finish: STOP -> stop (tool_calls when the candidate called functions); MAX_TOKENS -> length;
  SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_* -> content_filter;
  MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS -> error (the model tried to
  call and failed: no calls are returned); OTHER, LANGUAGE, unknown -> stop. A prompt blocked by
  `promptFeedback.blockReason` -> content_filter with empty content.
* usage: prompt = promptTokenCount + toolUsePromptTokenCount; completion = candidatesTokenCount
  + thoughtsTokenCount (Gemini counts thoughts apart; OpenAI counts reasoning as completion);
  reasoning_tokens = thoughtsTokenCount; cached_tokens = cachedContentTokenCount.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.providers._gemini_ids import call_id, call_tag, completion_id, signature_of
from thanos_asgi.providers._gemini_schema import clean_schema
from thanos_asgi.providers.base import tool_call_arguments
from thanos_asgi.providers.gemini_types import (
    Blob,
    Candidate,
    Content,
    FileData,
    FunctionCallingConfig,
    FunctionDeclaration,
    GenerateBody,
    GenerateResponse,
    GenerationConfig,
    GFunctionCall,
    GFunctionResponse,
    GTool,
    Part,
    ThinkingConfig,
    ToolConfig,
    UsageMetadata,
    _json,
    encode,
)
from thanos_asgi.types import (
    AudioPart,
    ChatRequest,
    ChatResponse,
    Choice,
    CompletionTokensDetails,
    ContentPart,
    FilePart,
    FunctionCall,
    ImagePart,
    Message,
    PromptTokensDetails,
    ResponseFormat,
    ResponseMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)

_MIME_BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY"}
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
    | {"IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}
)
_FAILED_CALLS = frozenset(
    {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}
)

# -- canonical -> Gemini ------------------------------------------------------------------------


def generate_body(request: ChatRequest) -> GenerateBody:
    """The `generateContent` body for a canonical request; InvalidRequest for what won't map."""
    system, contents = _contents(request.messages)
    return GenerateBody(
        contents=contents,
        system_instruction=Content(parts=system) if system else None,
        tools=_tools(request.tools),
        tool_config=_tool_config(request.tool_choice),
        generation_config=_generation_config(request),
    )


def _contents(messages: list[Message]) -> tuple[list[Part], list[Content]]:
    names: dict[str, str] = {}  # tool call id -> function name, for functionResponse
    system: list[Part] = []
    contents: list[Content] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            system.extend(Part(text=text) for text in _texts(message.content) if text)
            continue
        role, parts = _turn(message, index, names)
        if not parts:
            continue
        if contents and contents[-1].role == role:
            contents[-1].parts.extend(parts)
        else:
            contents.append(Content(role=role, parts=parts))
    return system, contents


def _turn(message: Message, index: int, names: dict[str, str]) -> tuple[str, list[Part]]:
    if message.role == "assistant":
        for call in message.tool_calls or ():
            names[call.id] = call.function.name
        return "model", _assistant_parts(message, index)
    if message.role in ("tool", "function"):
        return "user", [_tool_result(message, index, names)]
    return "user", _user_parts(message.content, index)


def _texts(content: str | list[ContentPart] | None) -> list[str]:
    if content is None or isinstance(content, str):
        return [content or ""]
    return [part.text for part in content if isinstance(part, TextPart)]


def _user_parts(content: str | list[ContentPart] | None, index: int) -> list[Part]:
    """Gemini refuses empty text parts, so they are left out (and a turn with none at all)."""
    if content is None or isinstance(content, str):
        return [Part(text=content)] if content else []
    parts = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                parts.append(Part(text=part.text))
        elif isinstance(part, ImagePart):
            parts.append(_media(part.image_url.url, index, "an image"))
        elif isinstance(part, AudioPart):
            audio = part.input_audio
            parts.append(Part(inline_data=Blob(mime_type=f"audio/{audio.format}", data=audio.data)))
        elif isinstance(part, FilePart):
            parts.append(_media(str(part.file.get("file_data") or ""), index, "a file"))
    return parts


def _media(url: str, index: int, what: str) -> Part:
    header, comma, data = url.partition(",")
    if comma and header.startswith("data:") and header.endswith(";base64"):
        mime = header[5:].split(";", 1)[0] or "application/octet-stream"
        return Part(inline_data=Blob(mime_type=mime, data=data))
    if url.startswith(("https://", "http://", "gs://")):
        extension = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
        mime = _MIME_BY_EXTENSION.get(extension, "image/jpeg")
        return Part(file_data=FileData(mime_type=mime, file_uri=url))
    raise InvalidRequest(
        f"messages[{index}]: {what} must be a data:...;base64 URL or an http(s)/gs:// link",
        param=f"messages[{index}].content",
    )


def _assistant_parts(message: Message, index: int) -> list[Part]:
    signature = message.reasoning_signature
    parts: list[Part] = []
    text = "".join(_texts(message.content))
    if text:
        parts.append(Part(text=text, thought_signature=signature))
        signature = None
    for number, call in enumerate(message.tool_calls or ()):
        function = GFunctionCall(name=call.function.name, args=tool_call_arguments(call, index))
        own = signature_of(call.id) or (signature if number == 0 else None)
        parts.append(Part(function_call=function, thought_signature=own))
    return parts


def _tool_result(message: Message, index: int, names: dict[str, str]) -> Part:
    name = names.get(message.tool_call_id or "") or message.name
    if not name:
        raise InvalidRequest(
            f"messages[{index}]: tool result for unknown tool_call_id {message.tool_call_id!r}",
            param=f"messages[{index}].tool_call_id",
        )
    text = "".join(_texts(message.content))
    response: Any = None
    if text.lstrip().startswith("{"):
        try:
            response = _json.decode(text)
        except msgspec.DecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"content": text}
    return Part(function_response=GFunctionResponse(name=name, response=response))


def _tools(tools: list[Tool] | None) -> list[GTool] | None:
    if not tools:
        return None
    declarations = [
        FunctionDeclaration(
            name=tool.function.name,
            description=tool.function.description,
            parameters=clean_schema(tool.function.parameters) if tool.function.parameters else None,
        )
        for tool in tools
    ]
    return [GTool(function_declarations=declarations)]


def _tool_config(choice: str | ToolChoice | None) -> ToolConfig | None:
    if choice is None:
        return None
    if isinstance(choice, ToolChoice):
        config = FunctionCallingConfig(mode="ANY", allowed_function_names=[choice.function.name])
    else:
        config = FunctionCallingConfig(mode=_MODES[choice])
    return ToolConfig(function_calling_config=config)


def _generation_config(request: ChatRequest) -> GenerationConfig | None:
    mime, schema = _response_format(request.response_format)
    config = GenerationConfig(
        temperature=request.temperature,
        top_p=request.top_p,
        max_output_tokens=request.output_limit,
        stop_sequences=request.stop_list or None,
        candidate_count=request.n,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        response_mime_type=mime,
        response_schema=schema,
        thinking_config=_thinking(request.reasoning_effort),
    )
    return config if any(v is not None for v in msgspec.structs.astuple(config)) else None


def _response_format(
    response_format: ResponseFormat | None,
) -> tuple[str | None, dict[str, Any] | None]:
    if response_format is None or response_format.type == "text":
        return None, None
    schema = response_format.json_schema
    if response_format.type == "json_schema" and schema and schema.schema is not None:
        return "application/json", clean_schema(schema.schema)
    return "application/json", None


def _thinking(effort: str | None) -> ThinkingConfig | None:
    if effort is None:
        return None
    if effort not in _BUDGETS:
        raise InvalidRequest(
            f"reasoning_effort {effort!r} has no Gemini equivalent; "
            "use none, minimal, low, medium or high",
            param="reasoning_effort",
        )
    budget = _BUDGETS[effort]
    return ThinkingConfig(thinking_budget=budget, include_thoughts=True if budget else None)


# -- ids and signatures -------------------------------------------------------------------------


# -- Gemini -> canonical ------------------------------------------------------------------------


class Pieces(msgspec.Struct):
    text: str
    thoughts: str
    calls: list[tuple[str, str, str | None]]  # (name, arguments JSON, thought signature)
    signature: str | None


def plain_text(candidate: Candidate) -> str | None:
    """The text of a candidate of one plain text part (most stream events), else None."""
    parts = candidate.content.parts if candidate.content else ()
    if len(parts) == 1:
        part = parts[0]
        if part.function_call is None and not part.thought and part.thought_signature is None:
            return part.text or ""
    return None


def read_candidate(candidate: Candidate) -> Pieces:
    parts = candidate.content.parts if candidate.content else ()
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[tuple[str, str, str | None]] = []
    signature = None
    for part in parts:
        if part.function_call is not None:
            arguments = encode(part.function_call.args or {}).decode()
            calls.append((part.function_call.name, arguments, part.thought_signature))
            continue
        signature = signature or part.thought_signature
        if part.text:
            (thoughts if part.thought else text).append(part.text)
    return Pieces("".join(text), "".join(thoughts), calls, signature)


def finish_reason(reason: str | None, called_tools: bool) -> str | None:
    if reason is None:
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    if reason in _FAILED_CALLS:
        return "error"
    return "tool_calls" if called_tools else "stop"


def usage_from(metadata: UsageMetadata) -> Usage:
    prompt = metadata.prompt_token_count + metadata.tool_use_prompt_token_count
    completion = metadata.candidates_token_count + metadata.thoughts_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=metadata.total_token_count or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=metadata.cached_content_token_count
        ),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=metadata.thoughts_token_count
        ),
    )


def to_response(answer: GenerateResponse, model: str, raw: bytes) -> ChatResponse:
    """A canonical response for a whole `generateContent` answer (`raw`: its bytes)."""
    tag = call_tag(answer.response_id or raw)
    choices: list[Choice] = []
    number = 0
    for candidate in answer.candidates:
        pieces = read_candidate(candidate)
        calls = []
        for name, arguments, signature in pieces.calls:
            function = FunctionCall(name=name, arguments=arguments)
            calls.append(ToolCall(id=call_id(tag, number, signature), function=function))
            number += 1
        message = ResponseMessage(
            content=pieces.text or (None if calls else ""),
            reasoning_content=pieces.thoughts or None,
            reasoning_signature=pieces.signature,
            tool_calls=calls or None,
        )
        reason = finish_reason(candidate.finish_reason, bool(calls)) or "stop"
        choices.append(Choice(index=candidate.index, message=message, finish_reason=reason))
    if not choices and answer.prompt_feedback and answer.prompt_feedback.block_reason:
        choices.append(Choice(message=ResponseMessage(content=""), finish_reason="content_filter"))
    usage = answer.usage_metadata
    return ChatResponse(
        id=completion_id(answer.response_id),
        created=int(time.time()),
        model=answer.model_version or model,
        choices=choices,
        usage=usage_from(usage) if usage else None,
    )
