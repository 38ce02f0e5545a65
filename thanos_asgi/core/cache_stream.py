"""Streams and the response cache: a stream collected into one answer, one answer replayed.

`Collector` folds canonical chunks into the `ChatResponse` they add up to (text, reasoning,
tool calls by index, finish reason, usage), so a stream and a whole answer share one cache
entry. `replay` turns a stored answer back into canonical chunks (one batch) (role, text, reasoning,
tool calls, finish, then usage), which every front-end encodes in its own dialect exactly as
it encodes a live stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from thanos_asgi.types import (
    ChatChunk,
    ChatResponse,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["Collector", "replay"]


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    signature: str | None = None
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    finish: str | None = None


class Collector:
    """Feed it every chunk of a stream; `response()` is the whole answer, once complete."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = 0
        self.usage: Usage | None = None
        self.choices: dict[int, _Choice] = {}
        self.size = 0  # about the bytes held: text, reasoning, refusals, tool calls

    def add(self, chunk: ChatChunk) -> None:
        self.id = self.id or chunk.id
        self.model = self.model or chunk.model
        self.created = self.created or chunk.created
        if chunk.usage is not None:
            self.usage = chunk.usage
        for part in chunk.choices:
            choice = self.choices.get(part.index)
            if choice is None:
                choice = self.choices[part.index] = _Choice()
            self.size += _fold(choice, part.delta)
            if part.finish_reason is not None:
                choice.finish = part.finish_reason

    @property
    def complete(self) -> bool:
        """Every choice said why it ended, and none with an error (a stream cut short did not)."""
        finishes = [c.finish for c in self.choices.values()]
        return bool(finishes) and all(f is not None and f != "error" for f in finishes)

    def response(self) -> ChatResponse:
        choices = [_choice(index, c) for index, c in sorted(self.choices.items())]
        return ChatResponse(
            id=self.id or "chatcmpl-cache",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage,
        )


def _fold(choice: _Choice, delta: Delta) -> int:
    """Add `delta` to `choice`; about how many bytes it added."""
    size = 16
    if delta.content:
        choice.text.append(delta.content)
        size += len(delta.content)
    reasoning = delta.reasoning_content or delta.reasoning
    if reasoning:
        choice.reasoning.append(reasoning)
        size += len(reasoning)
    if delta.reasoning_signature:
        choice.signature = delta.reasoning_signature
        size += len(delta.reasoning_signature)
    if delta.refusal:
        choice.refusal.append(delta.refusal)
        size += len(delta.refusal)
    for call_delta in delta.tool_calls or ():
        size += 16
        index = call_delta.index if call_delta.index >= 0 else len(choice.calls)
        call = choice.calls.get(index)
        if call is None:
            call = choice.calls[index] = _Call()
        call.id = call.id or call_delta.id or ""
        function = call_delta.function
        if function is not None:
            call.name = call.name or function.name or ""
            size += len(function.name or "")
            if function.arguments:
                call.arguments.append(function.arguments)
                size += len(function.arguments)
    return size


def _choice(index: int, choice: _Choice) -> Choice:
    calls = [
        ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments="".join(c.arguments)))
        for _, c in sorted(choice.calls.items())
    ]
    message = ResponseMessage(
        content="".join(choice.text) if choice.text or not calls else None,
        tool_calls=calls or None,
        refusal="".join(choice.refusal) or None,
        reasoning_content="".join(choice.reasoning) or None,
        reasoning_signature=choice.signature,
    )
    return Choice(index=index, message=message, finish_reason=choice.finish)


async def replay(response: ChatResponse) -> AsyncIterator[list[ChatChunk]]:
    """`response` as the chunks a provider would have streamed, usage last: one list, as if
    one read had brought them all (`Reply.batches`)."""
    chunks: list[ChatChunk] = []
    for choice in response.choices:
        chunks += (
            _chunk(response, [ChunkChoice(index=choice.index, delta=delta)])
            for delta in _deltas(choice.message)
        )
        finish = ChunkChoice(index=choice.index, delta=Delta(), finish_reason=choice.finish_reason)
        chunks.append(_chunk(response, [finish]))
    if response.usage is not None:
        chunks.append(_chunk(response, [], response.usage))
    yield chunks


def _deltas(message: ResponseMessage) -> list[Delta]:
    deltas = [Delta(role="assistant", content="")]
    reasoning = message.reasoning_content or message.reasoning
    if reasoning:
        deltas.append(
            Delta(reasoning_content=reasoning, reasoning_signature=message.reasoning_signature)
        )
    if message.content:
        deltas.append(Delta(content=message.content))
    if message.refusal:
        deltas.append(Delta(refusal=message.refusal))
    for index, call in enumerate(message.tool_calls or ()):
        function = FunctionCallDelta(name=call.function.name, arguments=call.function.arguments)
        deltas.append(
            Delta(
                tool_calls=[
                    ToolCallDelta(index=index, id=call.id, type="function", function=function)
                ]
            )
        )
    return deltas


def _chunk(
    response: ChatResponse, choices: list[ChunkChoice], usage: Usage | None = None
) -> ChatChunk:
    return ChatChunk(
        id=response.id, created=response.created, model=response.model, choices=choices, usage=usage
    )
