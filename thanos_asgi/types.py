"""Canonical wire types: OpenAI Chat Completions as msgspec Structs.

Every provider adapter converts provider <-> these, every front-end converts client <-> these.
Extensions beyond OpenAI's own fields: `reasoning_content` (reasoning / thinking text, as
DeepSeek and xAI name it) and `reasoning_signature` (Anthropic thinking signatures, Gemini
thought signatures) on messages and deltas, so multi-turn reasoning round-trips.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import msgspec

# -- request -------------------------------------------------------------------------------


class Target(NamedTuple):
    """One routing candidate: an instance name and the model to ask it for."""

    instance: str
    model: str


class _Wire(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class ImageURL(_Wire, kw_only=True):
    url: str
    detail: str | None = None


class TextPart(_Wire, kw_only=True, tag_field="type", tag="text"):
    text: str


class ImagePart(_Wire, kw_only=True, tag_field="type", tag="image_url"):
    image_url: ImageURL


class InputAudio(_Wire, kw_only=True):
    data: str
    format: str


class AudioPart(_Wire, kw_only=True, tag_field="type", tag="input_audio"):
    input_audio: InputAudio


class FilePart(_Wire, kw_only=True, tag_field="type", tag="file"):
    file: dict[str, Any]


ContentPart = TextPart | ImagePart | AudioPart | FilePart


class FunctionCall(_Wire, kw_only=True):
    name: str
    arguments: str = ""


class ToolCall(_Wire, kw_only=True, tag_field="type", tag="function"):
    id: str
    function: FunctionCall


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(_Wire, kw_only=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning_signature: str | None = None


class FunctionDef(_Wire, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire, kw_only=True, tag_field="type", tag="function"):
    function: FunctionDef


class ToolChoiceFunction(_Wire, kw_only=True):
    name: str


class ToolChoice(_Wire, kw_only=True, tag_field="type", tag="function"):
    function: ToolChoiceFunction


class JSONSchemaFormat(_Wire, kw_only=True):
    name: str = "response"
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(_Wire, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Wire, kw_only=True):
    include_usage: bool | None = None


class ChatRequest(_Wire, kw_only=True):
    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# -- response ------------------------------------------------------------------------------


class PromptTokensDetails(_Wire, kw_only=True):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionTokensDetails(_Wire, kw_only=True):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @property
    def cached_tokens(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details else 0

    @property
    def reasoning_tokens(self) -> int:
        details = self.completion_tokens_details
        return (details.reasoning_tokens or 0) if details else 0

    @property
    def output_tokens(self) -> int:
        """Output including reasoning, whichever way the provider counted it (xAI leaves
        reasoning out of `completion_tokens` but not out of `total_tokens`)."""
        return max(self.completion_tokens, self.total_tokens - self.prompt_tokens)


FinishReason = str  # "stop" | "length" | "tool_calls" | "content_filter" | "error"


class ResponseMessage(_Wire, kw_only=True, tag_field="role", tag="assistant"):
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning_signature: str | None = None
    reasoning: str | None = None  # what Groq, OpenRouter and Ollama call reasoning_content


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: ResponseMessage
    logprobs: Any = None
    finish_reason: FinishReason | None = None


class ChatResponse(_Wire, kw_only=True, tag_field="object", tag="chat.completion"):
    id: str
    created: int = 0
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class FunctionCallDelta(_Wire, kw_only=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Wire, kw_only=True):
    index: int = -1  # -1: the provider sent none (Gemini's OpenAI endpoint); adapters fill it
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(_Wire, kw_only=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning_signature: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None
    reasoning: str | None = None  # what Groq, OpenRouter and Ollama call reasoning_content


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta
    logprobs: Any = None
    finish_reason: FinishReason | None = None


class ChatChunk(_Wire, kw_only=True, tag_field="object", tag="chat.completion.chunk"):
    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# -- legacy completions, embeddings, models ---------------------------------------------------


class CompletionRequest(_Wire, kw_only=True):
    model: str
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    suffix: str | None = None
    echo: bool | None = None
    logprobs: int | None = None


class CompletionChoice(msgspec.Struct, kw_only=True):
    text: str
    index: int = 0
    logprobs: Any = None
    finish_reason: FinishReason | None = None


class CompletionResponse(_Wire, kw_only=True, tag_field="object", tag="text_completion"):
    id: str
    created: int = 0
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingRequest(_Wire, kw_only=True):
    model: str
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None

    @property
    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        raise TypeError("token-array input")


class Embedding(_Wire, kw_only=True, tag_field="object", tag="embedding"):
    index: int
    embedding: list[float] | str


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(_Wire, kw_only=True, tag_field="object", tag="list"):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage = msgspec.field(default_factory=EmbeddingUsage)


class ModelInfo(_Wire, kw_only=True, tag_field="object", tag="model"):
    id: str
    created: int = 0
    owned_by: str


class ModelList(_Wire, kw_only=True, tag_field="object", tag="list"):
    data: list[ModelInfo]
