"""Anthropic's Messages format <-> canonical: pure functions and stream state, no I/O.

Mapping decisions (PROVIDERS.md sections 0 and 2):
- system / developer messages become the top-level `system` (a string, or text blocks when
  there are several); consecutive same-role turns merge into one turn; `role: tool` results
  become `tool_result` blocks in a user turn; assistant `tool_calls` become `tool_use` blocks
  (arguments that are not a JSON object are a 400); `reasoning_content` with its
  `reasoning_signature` becomes a leading `thinking` block (reasoning without a signature is
  dropped: Anthropic refuses unsigned thinking, e.g. DeepSeek's).
- `reasoning_effort` none -> no thinking; minimal/low, medium, high -> `budget_tokens` 1024,
  4096, 16384. `max_tokens` (request, else the instance's `max_tokens`, else 4096) must exceed
  the budget, so when it doesn't the budget is added to it. Thinking runs without
  `temperature`/`top_p`, which Anthropic refuses alongside it.
- `response_format` json_object / json_schema: Anthropic has no such switch here, so a system
  instruction asks for one JSON object (with the schema, when given).
- Responses: text blocks joined; several thinking blocks are joined, keeping the last
  signature; `redacted_thinking` is dropped (encrypted, no canonical field: it only survives
  the `/v1/messages` pass-through); `server_tool_use` and unknown block types are skipped.
  stop_reason per `anthropic_types.FINISH_REASONS` (unknown -> "stop").
- Streams: `message_start` -> the role chunk; text / thinking / signature deltas -> content /
  reasoning_content / reasoning_signature; tool calls are numbered 0, 1, ... across tool
  blocks (not Anthropic's block index), and one whose input never arrived ends with arguments
  "{}" so they parse; `message_delta` -> the finish chunk; `message_stop` -> a last chunk with
  no choices and the usage (see `anthropic_types` for how cache tokens count).
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.ids import unique_hex
from thanos_asgi.providers import anthropic_types as api
from thanos_asgi.providers.anthropic_types import (
    MessageResponse,
    RequestBlock,
    TextBlock,
    Usage,
    chat_usage,
)
from thanos_asgi.providers.base import tool_call_arguments
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    ContentPart,
    Delta,
    FilePart,
    FunctionCall,
    FunctionCallDelta,
    ImagePart,
    Message,
    ResponseMessage,
    TextPart,
    ToolCall,
    ToolCallDelta,
)

Speaker = Literal["user", "assistant"]
DEFAULT_MAX_TOKENS = 4096
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
JSON_ONLY = "Respond with one JSON object and nothing else: no prose, no code fence."

_encode = msgspec.json.Encoder().encode
_BAD_ID = re.compile(r"[^A-Za-z0-9_-]")


# -- canonical -> Anthropic ---------------------------------------------------------------------


def request_body(
    request: ChatRequest, model: str, *, stream: bool, max_tokens: int = DEFAULT_MAX_TOKENS
) -> api.MessagesRequest:
    """The `/v1/messages` body for a canonical request; InvalidRequest for what won't map."""
    if request.n is not None and request.n > 1:
        raise InvalidRequest("anthropic returns one choice per request; n must be 1", param="n")
    system, turns = _conversation(request.messages)
    budget = _budget(request.reasoning_effort)
    limit = request.output_limit or max_tokens
    if budget and limit <= budget:
        limit += budget  # thinking counts against max_tokens; keep room for the answer
    return api.MessagesRequest(
        model=model,
        max_tokens=limit,
        messages=turns,
        system=_with_format(system, request),
        metadata=api.Metadata(user_id=request.user) if request.user else None,
        stop_sequences=request.stop_list or None,
        stream=stream,
        temperature=None if budget else request.temperature,
        top_p=None if budget else request.top_p,
        tools=_tools(request),
        tool_choice=_tool_choice(request),
        thinking=api.ThinkingParam(type="enabled", budget_tokens=budget) if budget else None,
    )


def _conversation(messages: list[Message]) -> tuple[list[TextBlock], list[api.MessageParam]]:
    system: list[TextBlock] = []
    turns: list[api.MessageParam] = []
    for index, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            system += [TextBlock(text=t) for t in _texts(message.content, index) if t]
            continue
        if role == "assistant":
            blocks = _assistant_blocks(message, index)
        elif role in ("tool", "function"):
            blocks = [_tool_result(message, index)]
        else:
            blocks = _user_blocks(message.content, index)
        speaker: Speaker = "assistant" if role == "assistant" else "user"
        if turns and turns[-1].role == speaker:
            turns[-1].content += blocks
        elif blocks:
            turns.append(api.MessageParam(role=speaker, content=blocks))
    return system, turns


def _texts(content: str | list[ContentPart] | None, index: int) -> list[str]:
    if content is None or isinstance(content, str):
        return [content] if content else []
    texts = []
    for part in content:
        if not isinstance(part, TextPart):
            raise InvalidRequest(
                f"messages[{index}]: only text is accepted here", param=f"messages[{index}].content"
            )
        texts.append(part.text)
    return texts


def _user_blocks(content: str | list[ContentPart] | None, index: int) -> list[RequestBlock]:
    if content is None or isinstance(content, str):
        return [TextBlock(text=content)] if content else []
    blocks: list[RequestBlock] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append(TextBlock(text=part.text))
        elif isinstance(part, ImagePart):
            blocks.append(api.ImageBlock(source=_source(part.image_url.url, index, "image/")))
        elif isinstance(part, FilePart):
            data = part.file.get("file_data")
            blocks.append(api.DocumentBlock(source=_source(str(data or ""), index, "application/")))
        else:
            raise InvalidRequest(
                f"messages[{index}]: anthropic does not accept audio input",
                param=f"messages[{index}].content",
            )
    return blocks


def _source(url: str, index: int, kind: str) -> dict[str, Any]:
    header, comma, data = url.partition(",")
    if comma and header.startswith("data:" + kind) and header.endswith(";base64"):
        return {"type": "base64", "media_type": header[5:-7], "data": data}
    if kind == "image/" and url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    what = "an image" if kind == "image/" else "a file (file_data)"
    raise InvalidRequest(
        f"messages[{index}]: {what} must be a data:{kind}...;base64 URL"
        + (" or an http(s) URL" if kind == "image/" else ""),
        param=f"messages[{index}].content",
    )


def _assistant_blocks(message: Message, index: int) -> list[RequestBlock]:
    blocks: list[RequestBlock] = []
    signature = message.reasoning_signature
    if signature:  # the text may be empty ("omitted" thinking): the signature carries it
        blocks.append(
            api.ThinkingBlock(thinking=message.reasoning_content or "", signature=signature)
        )
    blocks += [TextBlock(text=text) for text in _texts(message.content, index) if text]
    for call in message.tool_calls or ():
        arguments = tool_call_arguments(call, index)
        blocks.append(
            api.ToolUseBlock(id=_tool_id(call.id), name=call.function.name, input=arguments)
        )
    return blocks


def _tool_result(message: Message, index: int) -> api.ToolResultBlock:
    content = message.content
    parts: str | list[Any] = content or ""
    if isinstance(content, list):
        parts = _user_blocks(content, index)
    return api.ToolResultBlock(tool_use_id=_tool_id(message.tool_call_id or ""), content=parts)


def _tool_id(value: str) -> str:
    """Anthropic ids match [A-Za-z0-9_-]+; ids from other providers may not."""
    return _BAD_ID.sub("_", value)


def _with_format(system: list[TextBlock], request: ChatRequest) -> str | list[TextBlock] | None:
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        schema = response_format.json_schema
        instruction = JSON_ONLY
        if schema is not None and schema.schema is not None:
            instruction += " It must match this JSON schema: " + _encode(schema.schema).decode()
        system = [*system, TextBlock(text=instruction)]
    if not system:
        return None
    return system[0].text if len(system) == 1 else system


def _tools(request: ChatRequest) -> list[api.ToolParam] | None:
    if not request.tools:
        return None
    return [
        api.ToolParam(
            name=tool.function.name,
            description=tool.function.description,
            input_schema=tool.function.parameters or {"type": "object", "properties": {}},
        )
        for tool in request.tools
    ]


def _tool_choice(request: ChatRequest) -> api.ToolChoiceParam | None:
    if not request.tools:
        return None
    choice = request.tool_choice
    parallel = True if request.parallel_tool_calls is None else request.parallel_tool_calls
    if choice is None and parallel:
        return None
    if choice is None or choice == "auto":
        result = api.ToolChoiceParam(type="auto")
    elif choice == "required":
        result = api.ToolChoiceParam(type="any")
    elif choice == "none":
        return api.ToolChoiceParam(type="none")
    else:
        result = api.ToolChoiceParam(type="tool", name=choice.function.name)
    result.disable_parallel_tool_use = None if parallel else True
    return result


def _budget(effort: str | None) -> int | None:
    if effort is None or effort == "none":
        return None
    budget = BUDGETS.get(effort)
    if budget is None:
        raise InvalidRequest(
            f"reasoning_effort {effort!r} has no Anthropic equivalent; "
            "use none, minimal, low, medium or high",
            param="reasoning_effort",
        )
    return budget


# -- Anthropic -> canonical ---------------------------------------------------------------------


def chat_response(message: MessageResponse, model: str) -> ChatResponse:
    texts: list[str] = []
    thoughts: list[str] = []
    signature = None
    calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "thinking":
            thoughts.append(block.thinking or "")
            signature = block.signature or signature
        elif block.type == "tool_use":
            arguments = _encode(block.input if block.input is not None else {}).decode()
            calls.append(
                ToolCall(
                    id=block.id or "",
                    function=FunctionCall(name=block.name or "", arguments=arguments),
                )
            )
    text = "".join(texts)
    reply = ResponseMessage(
        content=text if text or not calls else None,
        tool_calls=calls or None,
        reasoning_content="".join(thoughts) or None,
        reasoning_signature=signature,
    )
    choice = Choice(message=reply, finish_reason=api.finish_reason(message.stop_reason))
    return ChatResponse(
        id=message.id,
        created=int(time.time()),
        model=message.model or model,
        choices=[choice],
        usage=chat_usage(message.usage),
    )


class Stream:
    """One stream's state: ids, the usage so far, and which blocks are tool calls."""

    def __init__(self, model: str) -> None:
        self.id = f"msg_{unique_hex(96)}"  # until message_start names it
        self.created = int(time.time())
        self.model = model
        self.usage: Usage | None = None
        self.tools: dict[int, int] = {}  # Anthropic block index -> canonical tool call index
        self.pending: set[int] = set()  # tool calls whose input has not arrived yet

    def feed(self, event: api.StreamEvent) -> ChatChunk | None:
        if isinstance(event, api.ContentBlockDelta):
            return self._delta(event)
        if isinstance(event, api.ContentBlockStart):
            return self._block(event.index, event.content_block)
        if isinstance(event, api.ContentBlockStop):
            return self._stop(event.index)
        if isinstance(event, api.MessageDelta):
            return self._finish(event)
        message = event.message
        self.id, self.model, self.usage = message.id, message.model or self.model, message.usage
        return self._chunk(Delta(role="assistant", content=""))

    def _delta(self, event: api.ContentBlockDelta) -> ChatChunk | None:
        delta = event.delta
        if delta.type == "text_delta" and delta.text:
            return self._chunk(Delta(content=delta.text))
        if delta.type == "thinking_delta" and delta.thinking:
            return self._chunk(Delta(reasoning_content=delta.thinking))
        if delta.type == "signature_delta" and delta.signature:
            return self._chunk(Delta(reasoning_signature=delta.signature))
        tool = self.tools.get(event.index)
        if delta.type == "input_json_delta" and delta.partial_json and tool is not None:
            self.pending.discard(tool)
            return self._call(
                ToolCallDelta(index=tool, function=FunctionCallDelta(arguments=delta.partial_json))
            )
        return None  # citations, server tools' input, future delta types

    def _block(self, index: int, block: api.ContentBlock) -> ChatChunk | None:
        if block.type == "tool_use":
            tool = self.tools[index] = len(self.tools)
            self.pending.add(tool)
            function = FunctionCallDelta(name=block.name or "", arguments="")
            return self._call(
                ToolCallDelta(index=tool, id=block.id, type="function", function=function)
            )
        if block.type == "text" and block.text:
            return self._chunk(Delta(content=block.text))
        if block.type == "thinking" and block.thinking:
            return self._chunk(Delta(reasoning_content=block.thinking))
        return None

    def _stop(self, index: int) -> ChatChunk | None:
        tool = self.tools.get(index)
        if tool is None or tool not in self.pending:
            return None
        self.pending.discard(tool)
        return self._call(ToolCallDelta(index=tool, function=FunctionCallDelta(arguments="{}")))

    def _finish(self, event: api.MessageDelta) -> ChatChunk:
        if self.usage is None:
            self.usage = event.usage
        else:
            self.usage.update(event.usage)
        return self._chunk(Delta(), api.finish_reason(event.delta.stop_reason))

    def _call(self, call: ToolCallDelta) -> ChatChunk:
        return self._chunk(Delta(tool_calls=[call]))

    def _chunk(self, delta: Delta, finish: str | None = None) -> ChatChunk:
        choice = ChunkChoice(delta=delta, finish_reason=finish)
        return ChatChunk(id=self.id, created=self.created, model=self.model, choices=[choice])

    def usage_chunk(self) -> ChatChunk:
        usage = chat_usage(self.usage) if self.usage else None
        return ChatChunk(
            id=self.id, created=self.created, model=self.model, choices=[], usage=usage
        )
