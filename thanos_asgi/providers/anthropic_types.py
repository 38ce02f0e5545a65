"""Anthropic Messages API wire types, shared by the Anthropic adapter and `/v1/messages`.

Request content blocks are exact tagged Structs: the adapter sends them, and the front-end
validates a client's known block types into them one block at a time (unknown types are left
alone, so a pass-through to Anthropic never trips on a block type this gateway doesn't know).
Response content blocks, deltas and usage are flat and lenient: new block and delta types
decode without error and are skipped by whoever doesn't understand them.

Also here: the stop-reason tables in both directions (PROVIDERS.md section 0) and the usage
mapping. Canonical `prompt_tokens` counts every input token: `input_tokens` +
`cache_read_input_tokens` + `cache_creation_input_tokens` (Anthropic's `input_tokens` excludes
both cache counters), with `cached_tokens` = cache reads and `cache_creation_tokens` = cache
writes in `prompt_tokens_details`, so the reverse mapping is exact.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from thanos_asgi.types import CompletionTokensDetails, PromptTokensDetails
from thanos_asgi.types import Usage as ChatUsage


class _Wire(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


# -- request content blocks ---------------------------------------------------------------------


class TextBlock(_Wire, kw_only=True, tag_field="type", tag="text"):
    text: str


class ImageBlock(_Wire, kw_only=True, tag_field="type", tag="image"):
    source: dict[str, Any]  # {"type": "base64", media_type, data} | {"type": "url", url} | ...


class DocumentBlock(_Wire, kw_only=True, tag_field="type", tag="document"):
    source: dict[str, Any]
    title: str | None = None


class ToolUseBlock(_Wire, kw_only=True, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Wire, kw_only=True, tag_field="type", tag="tool_result"):
    tool_use_id: str
    content: str | list[Any] = ""  # a string, or text / image (/ document) blocks
    is_error: bool | None = None


class ThinkingBlock(_Wire, kw_only=True, tag_field="type", tag="thinking"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(_Wire, kw_only=True, tag_field="type", tag="redacted_thinking"):
    data: str


RequestBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)

BLOCK_TYPES: dict[str, type[RequestBlock]] = {
    "text": TextBlock,
    "image": ImageBlock,
    "document": DocumentBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
    "thinking": ThinkingBlock,
    "redacted_thinking": RedactedThinkingBlock,
}


# -- request --------------------------------------------------------------------------------------


class ToolParam(_Wire, kw_only=True):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceParam(_Wire, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingParam(_Wire, kw_only=True):
    type: str  # "enabled" | "disabled" | "adaptive" | ...
    budget_tokens: int | None = None


class Metadata(_Wire, kw_only=True):
    user_id: str | None = None


class MessageParam(_Wire, kw_only=True):
    role: Literal["user", "assistant"]
    content: list[RequestBlock]


class MessagesRequest(_Wire, kw_only=True):
    """What the adapter sends: canonical requests become this."""

    model: str
    max_tokens: int
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool  # always sent
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None


class InMessage(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesBody(msgspec.Struct, kw_only=True):
    """What a client sends to `/v1/messages`, as far as the gateway reads it.

    Blocks, system blocks and tools stay dicts here: known kinds are validated one by one
    when translating, unknown ones (server tools, new block types) are only relayed.
    """

    model: str
    max_tokens: int
    messages: list[InMessage]
    system: str | list[dict[str, Any]] | None = None
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None


class CountTokensBody(msgspec.Struct, kw_only=True):
    model: str
    messages: list[InMessage]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


class TokenCount(msgspec.Struct, kw_only=True):
    input_tokens: int


# -- response and stream events ---------------------------------------------------------------


class ContentBlock(_Wire, kw_only=True):
    """Any response content block, flat: only the fields its `type` uses are set."""

    type: str
    id: str | None = None
    name: str | None = None
    input: Any = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class OutputTokensDetails(_Wire, kw_only=True):
    thinking_tokens: int | None = None


class Usage(_Wire, kw_only=True):
    output_tokens: int
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None

    def update(self, later: Usage) -> None:
        """Take a `message_delta`'s cumulative counters over a `message_start`'s."""
        self.output_tokens = later.output_tokens
        if later.input_tokens is not None:
            self.input_tokens = later.input_tokens
        if later.cache_creation_input_tokens is not None:
            self.cache_creation_input_tokens = later.cache_creation_input_tokens
        if later.cache_read_input_tokens is not None:
            self.cache_read_input_tokens = later.cache_read_input_tokens
        if later.output_tokens_details is not None:
            self.output_tokens_details = later.output_tokens_details


class MessageResponse(msgspec.Struct, kw_only=True, tag_field="type", tag="message"):
    id: str
    role: str = "assistant"
    model: str = ""
    content: list[ContentBlock] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage


class MessageStart(_Wire, kw_only=True, tag_field="type", tag="message_start"):
    message: MessageResponse


class ContentBlockStart(_Wire, kw_only=True, tag_field="type", tag="content_block_start"):
    index: int
    content_block: ContentBlock


class BlockDelta(_Wire, kw_only=True):
    type: str  # text_delta | thinking_delta | signature_delta | input_json_delta | ...
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None


class ContentBlockDelta(_Wire, kw_only=True, tag_field="type", tag="content_block_delta"):
    index: int
    delta: BlockDelta


class ContentBlockStop(_Wire, kw_only=True, tag_field="type", tag="content_block_stop"):
    index: int


class StopInfo(msgspec.Struct, kw_only=True):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDelta(_Wire, kw_only=True, tag_field="type", tag="message_delta"):
    delta: StopInfo
    usage: Usage


class MessageStop(_Wire, kw_only=True, tag_field="type", tag="message_stop"):
    pass


StreamEvent = MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta


class ErrorDetail(msgspec.Struct, kw_only=True):
    type: str = "api_error"
    message: str = ""


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail | None = None


class ModelEntry(msgspec.Struct):
    id: str


class ModelPage(msgspec.Struct):
    data: list[ModelEntry] = []


# -- mappings -----------------------------------------------------------------------------------

# stop_reason -> finish_reason; anything not listed (e.g. `compaction`, future values) -> "stop"
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# finish_reason -> stop_reason; anything not listed -> "end_turn"
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# error.type -> the HTTP status it stands for (an `event: error` arrives after a 200)
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def stop_reason(finish: str | None) -> str:
    return STOP_REASONS.get(finish or "", "end_turn")


def chat_usage(usage: Usage) -> ChatUsage:
    """Anthropic usage -> canonical (prompt = input + cache reads + cache writes)."""
    read, created = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    prompt = (usage.input_tokens or 0) + (read or 0) + (created or 0)
    details = None
    if read is not None or created is not None:
        details = PromptTokensDetails(cached_tokens=read, cache_creation_tokens=created)
    thinking = usage.output_tokens_details
    return ChatUsage(
        prompt_tokens=prompt,
        completion_tokens=usage.output_tokens,
        total_tokens=prompt + usage.output_tokens,
        prompt_tokens_details=details,
        completion_tokens_details=(
            CompletionTokensDetails(reasoning_tokens=thinking.thinking_tokens)
            if thinking and thinking.thinking_tokens is not None
            else None
        ),
    )


def message_usage(usage: ChatUsage | None) -> Usage:
    """Canonical usage -> Anthropic (the exact reverse of `chat_usage`)."""
    if usage is None:
        return Usage(input_tokens=0, output_tokens=0)
    details = usage.prompt_tokens_details
    read = details.cached_tokens if details else None
    created = details.cache_creation_tokens if details else None
    return Usage(
        input_tokens=max(usage.prompt_tokens - (read or 0) - (created or 0), 0),
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=created,
    )
