"""The Anthropic-compatible front-end: `POST /v1/messages` and `/v1/messages/count_tokens`.

The official `anthropic` SDK and Claude Code can use any provider behind the gateway. In front
of an Anthropic instance the client's JSON is relayed (only `model` changes) and the bytes come
back untouched; in front of anything else the request becomes canonical and the answer is
rebuilt in Anthropic's shapes (`_messages_out`).

Request mapping (the reverse of the Anthropic adapter's):
- `system` -> one system message (text blocks joined by a blank line); user text blocks ->
  the user message (a string when text only, parts when images or PDFs are present);
  `tool_result` blocks -> `role: tool` messages placed before the rest of their user turn (an
  image inside a tool result moves into that user message: OpenAI tool messages take text
  only); assistant `tool_use` -> `tool_calls` (input JSON-encoded); `thinking` ->
  `reasoning_content` + `reasoning_signature` (several joined, last signature kept).
- Not translated, only relayed to Anthropic: `redacted_thinking`, server tools
  (`web_search_...`, `bash_...`: tools with a `type` other than "custom") and their blocks,
  image/document sources other than base64 or URL, and block types this gateway doesn't know.
- `max_tokens` -> `max_completion_tokens` (OpenAI's reasoning models refuse `max_tokens`);
  `stop_sequences` -> `stop`; `thinking` enabled -> `reasoning_effort` by budget (< 4096 low,
  < 16384 medium, else high; "adaptive" -> medium; disabled -> none), so the adapter's budgets
  1024 / 4096 / 16384 map back to the same effort; `tool_choice` auto/any/tool/none -> auto/
  required/named/none, `disable_parallel_tool_use` -> `parallel_tool_calls: false`;
  `metadata.user_id` -> `user` (OpenAI refuses `user` over 64 characters, so a longer id is
  sent as its SHA-256 hex digest); `top_k` has no canonical field and is dropped.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.frontends import _anthropic_out as out
from thanos_asgi.frontends.asgi import JSON, header, read_body, respond
from thanos_asgi.frontends.openai import convert, decode_json
from thanos_asgi.providers.anthropic_types import (
    BLOCK_TYPES,
    CountTokensBody,
    DocumentBlock,
    ImageBlock,
    InMessage,
    MessagesBody,
    RequestBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingParam,
    TokenCount,
    ToolChoiceParam,
    ToolParam,
    ToolResultBlock,
    ToolUseBlock,
)
from thanos_asgi.sanitize import check_model_name
from thanos_asgi.types import (
    ChatRequest,
    ContentPart,
    FilePart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
)

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange, ThanosApp

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_CHOICES: dict[str, Literal["auto", "required", "none"]] = {
    "auto": "auto",
    "any": "required",
    "none": "none",
}
BYTES_PER_TOKEN = 4


# -- endpoints ----------------------------------------------------------------------------------


async def create(app: ThanosApp, ex: Exchange) -> None:
    """`POST /v1/messages`: relayed to Anthropic, translated for everyone else."""
    raw, request = decode_messages(await read_body(ex.scope, ex.receive, app.limit))
    ctx = ex.context()
    ctx.anthropic_beta = client_betas(header(ex.scope, b"anthropic-beta"))
    async with app.dispatch(ex, request, ctx, raw=raw, wire="anthropic") as reply:
        relayed = reply.relayed
        if relayed is not None and relayed.events is None:
            reply.finish()
            await respond(ex.send, 200, relayed.body, [*JSON, *app._headers(ex, reply)])
        elif reply.response is not None:
            reply.finish()
            body = _encode(out.message(reply.response, reply.model))
            await respond(ex.send, 200, body, [*JSON, *app._headers(ex, reply)])
        else:
            events = relayed.events if relayed and relayed.events else out.events(reply)
            await app._stream(ex, reply, events, on_error=out.error_event)


async def count_tokens(app: ThanosApp, ex: Exchange) -> None:
    """`POST /v1/messages/count_tokens`: an estimate, never an upstream call.

    About one token per 4 bytes of the JSON of system + messages + tools: close for English
    prose and code, low for CJK text, high for base64 images (which Anthropic bills by pixels).
    It spends nothing, so of the admission steps only the key's allow-list and requests per
    minute apply.
    """
    data = decode_json(await read_body(ex.scope, ex.receive, app.limit))
    body = convert(data, CountTokensBody)  # the same 400s as Anthropic for a malformed body
    check_model_name(body.model)
    await app.gateway.check_access(body.model, ex.context())
    size = len(_encode([data.get("system"), data["messages"], data.get("tools")]))
    tokens = max(1, -(-size // BYTES_PER_TOKEN))
    await respond(ex.send, 200, _encode(TokenCount(input_tokens=tokens)))


# -- Anthropic request -> canonical -------------------------------------------------------------


def decode_messages(body: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The client's JSON as a dict (relayed as is) and as a canonical ChatRequest."""
    data = decode_json(body)
    parsed = convert(data, MessagesBody)
    if not parsed.model:
        raise InvalidRequest("`model` must name a model", param="model")
    if not parsed.messages:
        raise InvalidRequest("`messages` must contain at least one message", param="messages")
    _check_ranges(parsed)
    return data, to_chat(parsed)


def _check_ranges(body: MessagesBody) -> None:
    """Where Anthropic's ranges are narrower than the canonical ones (`core.validation`):
    `temperature` and `top_p` 0 .. 1, `top_k` >= 0 (it is relayed, never translated)."""
    for name, value in (("temperature", body.temperature), ("top_p", body.top_p)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            raise InvalidRequest(
                f"`{name}` must be between 0 and 1 (got {value!r}) - at `$.{name}`", param=name
            )
    if body.top_k is not None and not 0 <= body.top_k < 2**31:
        raise InvalidRequest(
            f"`top_k` must be between 0 and {2**31 - 1} (got {body.top_k}) - at `$.top_k`",
            param="top_k",
        )


def to_chat(body: MessagesBody) -> ChatRequest:
    messages: list[Message] = []
    system = _system(body.system)
    if system:
        messages.append(Message(role="system", content=system))
    for index, turn in enumerate(body.messages):
        messages += _turn(turn, f"messages[{index}].content")
    tools = _tools(body.tools)
    user = body.metadata.user_id if body.metadata else None
    if user and len(user) > 64:
        user = hashlib.sha256(user.encode()).hexdigest()
    choice = body.tool_choice if tools else None
    return ChatRequest(
        model=body.model,
        messages=messages,
        stream=body.stream,
        max_completion_tokens=body.max_tokens,
        stop=body.stop_sequences or None,
        temperature=body.temperature,
        top_p=body.top_p,
        user=user,
        tools=tools,
        tool_choice=_tool_choice(choice),
        parallel_tool_calls=False if choice and choice.disable_parallel_tool_use else None,
        reasoning_effort=_effort(body.thinking),
    )


def _block(raw: dict[str, Any], path: str) -> RequestBlock | None:
    """A known block validated into its Struct; None for types only Anthropic reads."""
    kind = BLOCK_TYPES.get(str(raw.get("type")))
    return None if kind is None else _convert(raw, kind, path)


def _convert(raw: Any, type_: type[T], path: str) -> T:
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `$")
        where = path + where.rstrip("`")
        raise InvalidRequest(f"{reason} - at `$.{where}`", param=where) from None


def _system(system: str | list[dict[str, Any]] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    texts = [
        block.text
        for index, raw in enumerate(system)
        if isinstance(block := _block(raw, f"system[{index}]"), TextBlock)
    ]
    return "\n\n".join(texts) or None


def _turn(turn: InMessage, path: str) -> list[Message]:
    if isinstance(turn.content, str):
        return [Message(role=turn.role, content=turn.content)]
    blocks = [_block(raw, f"{path}[{i}]") for i, raw in enumerate(turn.content)]
    if turn.role == "assistant":
        return [_assistant(blocks)]
    results: list[Message] = []
    parts: list[ContentPart] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            results.append(_tool_message(block, parts, path))
        else:
            _add_part(block, parts)
    if parts:
        results.append(Message(role="user", content=_content(parts)))
    return results


def _add_part(block: RequestBlock | None, parts: list[ContentPart]) -> None:
    if isinstance(block, TextBlock):
        parts.append(TextPart(text=block.text))
    elif isinstance(block, ImageBlock):
        url = _url(block.source)
        if url:
            parts.append(ImagePart(image_url=ImageURL(url=url)))
    elif isinstance(block, DocumentBlock):
        source = block.source
        if source.get("type") == "text":
            parts.append(TextPart(text=str(source.get("data", ""))))
        elif url := _url(source):
            name = block.title or "document.pdf"
            parts.append(FilePart(file={"filename": name, "file_data": url}))


def _url(source: dict[str, Any]) -> str | None:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", "")) or None
    return None  # a Files API id or a new source type: Anthropic-only


def _content(parts: list[ContentPart]) -> str | list[ContentPart]:
    """Text only -> one string (what every OpenAI-compatible server accepts); else parts."""
    if all(isinstance(part, TextPart) for part in parts):
        return "\n\n".join(part.text for part in parts if isinstance(part, TextPart))
    return parts


def _tool_message(block: ToolResultBlock, parts: list[ContentPart], path: str) -> Message:
    content = block.content
    if not isinstance(content, str):
        texts: list[ContentPart] = []
        for index, raw in enumerate(content):
            inner = _block(raw, f"{path}.content[{index}]") if isinstance(raw, dict) else None
            _add_part(inner, texts if isinstance(inner, TextBlock) else parts)
        content = "\n\n".join(p.text for p in texts if isinstance(p, TextPart))
    return Message(role="tool", tool_call_id=block.tool_use_id, content=content)


def _assistant(blocks: list[RequestBlock | None]) -> Message:
    texts: list[str] = []
    thoughts: list[str] = []
    signature: str | None = None
    calls: list[ToolCall] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            thoughts.append(block.thinking)
            signature = block.signature or signature
        elif isinstance(block, ToolUseBlock):
            arguments = _encode(block.input).decode()
            function = FunctionCall(name=block.name, arguments=arguments)
            calls.append(ToolCall(id=block.id, function=function))
    text = "".join(texts)
    return Message(
        role="assistant",
        content=text if text or not calls else None,
        tool_calls=calls or None,
        reasoning_content="".join(thoughts) or None,
        reasoning_signature=signature,
    )


def _tools(tools: list[dict[str, Any]] | None) -> list[Tool] | None:
    out_tools = []
    for index, raw in enumerate(tools or ()):
        if raw.get("type", "custom") != "custom":
            continue  # a server tool: Anthropic runs it; nobody else can
        tool = _convert(raw, ToolParam, f"tools[{index}]")
        function = FunctionDef(
            name=tool.name, description=tool.description, parameters=tool.input_schema
        )
        out_tools.append(Tool(function=function))
    return out_tools or None


def _tool_choice(
    choice: ToolChoiceParam | None,
) -> Literal["auto", "required", "none"] | ToolChoice | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type tool needs a name", param="tool_choice.name")
        return ToolChoice(function=ToolChoiceFunction(name=choice.name))
    return _CHOICES[choice.type]


def _effort(thinking: ThinkingParam | None) -> str | None:
    if thinking is None or thinking.type == "disabled":
        return None
    if thinking.type == "adaptive":
        return "medium"
    budget = thinking.budget_tokens or 0
    if thinking.type != "enabled" or budget <= 0:
        return None
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


_BETA = re.compile(r"[A-Za-z0-9._-]{1,64}")


def client_betas(value: bytes | None) -> str | None:
    """The beta features a client asked Anthropic for (Claude Code sends several), as a
    clean comma-separated list; anything that is not a plain feature name is left out."""
    if not value:
        return None
    names = [name.strip() for name in value.decode("latin-1").split(",")]
    kept = [name for name in names if _BETA.fullmatch(name)][:32]
    return ",".join(kept) or None
