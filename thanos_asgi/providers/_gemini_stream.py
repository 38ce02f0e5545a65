"""Gemini's `streamGenerateContent` events -> canonical chunks, for Gemini and Vertex AI.

Every event is a whole `GenerateContentResponse`, decoded by `_gemini_codec`'s reading of a
candidate; this module keeps the state between events:

* The first event names the stream: its id and tool-call ids come from its `responseId` (or
  its bytes), as for a whole answer. `modelVersion` replaces the requested model when sent.
* The role goes out once per choice, on its first chunk. `ToolCallDelta.index` counts per
  choice; call ids count across choices, so they stay unique. Each call arrives whole.
* `finishReason` is held until `close`, which sends one finish chunk per finished choice
  (mapped as for a whole answer) and then a usage-only chunk: `usageMetadata` is cumulative,
  so the last one seen counts. A prompt blocked by `promptFeedback.blockReason` finishes
  choice 0 as content_filter.
* There is no `[DONE]`: the stream is complete (`finished`) once some choice has a finish.
"""

from __future__ import annotations

import time

from thanos_asgi.providers._gemini_codec import (
    Pieces,
    finish_reason,
    plain_text,
    read_candidate,
    usage_from,
)
from thanos_asgi.providers._gemini_ids import call_id, call_tag, completion_id
from thanos_asgi.providers.gemini_types import GenerateResponse, UsageMetadata
from thanos_asgi.types import ChatChunk, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, Usage


class _ChoiceState:
    __slots__ = ("called", "finish", "role_sent", "tools")

    def __init__(self) -> None:
        self.role_sent = False
        self.tools = 0  # ToolCallDelta.index runs per choice
        self.called = False
        self.finish: str | None = None  # Gemini's finishReason, once seen


class StreamDecoder:
    """One stream's state; `feed` each event, then `close` for the finish and usage chunks."""

    def __init__(self, model: str) -> None:
        self.id = ""
        self.created = int(time.time())
        self.model = model
        self.tag = ""
        self.calls = 0  # across choices, for unique ids
        self.metadata: UsageMetadata | None = None  # cumulative: the last one counts
        self.choices: dict[int, _ChoiceState] = {}

    @property
    def finished(self) -> bool:
        return any(state.finish for state in self.choices.values())

    def feed(self, event: GenerateResponse, raw: bytes) -> list[ChatChunk]:
        if not self.tag:
            self.tag = call_tag(event.response_id or raw)
            self.id = completion_id(event.response_id)
        self.model = event.model_version or self.model
        if event.usage_metadata is not None:
            self.metadata = event.usage_metadata
        feedback = event.prompt_feedback
        if feedback and feedback.block_reason and not event.candidates:  # the prompt was blocked
            self.choices.setdefault(0, _ChoiceState()).finish = "SAFETY"
        chunks = []
        for candidate in event.candidates:
            index = candidate.index
            state = self.choices.get(index)
            if state is None:
                state = self.choices[index] = _ChoiceState()
            text = plain_text(candidate)
            if text is None:
                delta = self._delta(read_candidate(candidate), state)
            else:
                delta = Delta(content=text) if text else None
            if delta is None:
                pass
            elif state.role_sent:  # most events: what `_chunk` makes, without its two calls
                choice = ChunkChoice(index=index, delta=delta)
                chunks.append(
                    ChatChunk(id=self.id, created=self.created, model=self.model, choices=[choice])
                )
            else:
                chunks.append(self._chunk(index, state, delta))
            state.finish = candidate.finish_reason or state.finish
        return chunks

    def close(self) -> list[ChatChunk]:
        chunks = [
            self._chunk(index, state, Delta(), finish_reason(state.finish, state.called))
            for index, state in sorted(self.choices.items())
            if state.finish
        ]
        if self.metadata is not None:  # read once, at the end
            chunks.append(self._envelope([], usage_from(self.metadata)))
        return chunks

    def _delta(self, pieces: Pieces, state: _ChoiceState) -> Delta | None:
        deltas = []
        for name, arguments, signature in pieces.calls:
            function = FunctionCallDelta(name=name, arguments=arguments)
            tool_id = call_id(self.tag, self.calls, signature)
            deltas.append(
                ToolCallDelta(index=state.tools, id=tool_id, type="function", function=function)
            )
            state.tools, self.calls, state.called = state.tools + 1, self.calls + 1, True
        if not (pieces.text or pieces.thoughts or pieces.signature or deltas):
            return None
        return Delta(
            content=pieces.text or None,
            reasoning_content=pieces.thoughts or None,
            reasoning_signature=pieces.signature,
            tool_calls=deltas or None,
        )

    def _chunk(
        self, index: int, state: _ChoiceState, delta: Delta, finish: str | None = None
    ) -> ChatChunk:
        if not state.role_sent:
            delta.role, state.role_sent = "assistant", True
        return self._envelope([ChunkChoice(index=index, delta=delta, finish_reason=finish)])

    def _envelope(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )
