"""Gemini's `generateContent` wire types (camelCase on the wire), shared by the Gemini API and
Vertex AI: the request body, the answer, and their encoder and decoder. `_gemini_codec` maps
them to and from the canonical types."""

from __future__ import annotations

from typing import Any

import msgspec

from thanos_asgi.sanitize import Decoder


class _G(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    pass


class Blob(_G, kw_only=True):
    mime_type: str
    data: str


class FileData(_G, kw_only=True):
    mime_type: str
    file_uri: str


class GFunctionCall(_G, kw_only=True):
    name: str
    args: dict[str, Any] | None = None  # we always send it, `{}` included
    id: str | None = None  # newer clients name their calls (read by the Gemini front-end)


class GFunctionResponse(_G, kw_only=True):
    name: str
    response: dict[str, Any]
    id: str | None = None


class Part(_G, kw_only=True):
    text: str | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: GFunctionCall | None = None
    function_response: GFunctionResponse | None = None


class Content(_G, kw_only=True):
    role: str | None = None
    parts: list[Part] = msgspec.field(default_factory=list)


class FunctionDeclaration(_G, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class GTool(_G, kw_only=True):
    function_declarations: list[FunctionDeclaration]


class FunctionCallingConfig(_G, kw_only=True):
    mode: str
    allowed_function_names: list[str] | None = None


class ToolConfig(_G, kw_only=True):
    function_calling_config: FunctionCallingConfig


class ThinkingConfig(_G, kw_only=True):
    thinking_budget: int | None = None
    include_thoughts: bool | None = None


class GenerationConfig(_G, kw_only=True):
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
    thinking_config: ThinkingConfig | None = None


class GenerateBody(_G, kw_only=True):
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[GTool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None


class Candidate(_G, kw_only=True):
    content: Content | None = None
    finish_reason: str | None = None
    index: int = 0  # proto3 JSON leaves a zero out


class UsageMetadata(_G, kw_only=True):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    cached_content_token_count: int = 0
    total_token_count: int = 0


class PromptFeedback(_G, kw_only=True):
    block_reason: str | None = None


class GenerateResponse(_G, kw_only=True):
    """A whole answer, or one stream event (each is a complete GenerateContentResponse)."""

    candidates: list[Candidate] = msgspec.field(default_factory=list)
    usage_metadata: UsageMetadata | None = None
    prompt_feedback: PromptFeedback | None = None
    model_version: str = ""
    response_id: str = ""
    error: Any = None  # an error object sent after the status line


response_decoder = Decoder(GenerateResponse)
encode = msgspec.json.Encoder().encode
_json = Decoder()
