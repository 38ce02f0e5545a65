"""Canonical answers in Anthropic's shapes, for `/v1/messages` in front of any provider.

Non-stream: one `message` object, content blocks in the order thinking, text, tool_use.
Streams: `message_start`, then per block `content_block_start` / `content_block_delta`* /
`content_block_stop` (one block open at a time: a new kind of delta closes the open block),
then `message_delta` (stop_reason, usage) and `message_stop`. Each is framed as
`event: <type>\\ndata: <json>\\n\\n`; a failure after the first byte is an `event: error`.

finish_reason -> stop_reason: stop -> end_turn, length -> max_tokens, tool_calls -> tool_use,
content_filter -> refusal; "stop" after tool calls (servers that don't say tool_calls) ->
tool_use. Tool-call fragments for a call whose block is already closed (no known server
interleaves them) still go to that call's block index, which the SDK accumulates by index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from thanos_asgi.exceptions import ThanosError, UpstreamProtocolError
from thanos_asgi.frontends.errors import anthropic_error
from thanos_asgi.frontends.sse import joined
from thanos_asgi.ids import unique_hex
from thanos_asgi.providers.anthropic_types import (
    BlockDelta,
    ContentBlock,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    MessageDelta,
    MessageResponse,
    MessageStart,
    StopInfo,
    Usage,
    message_usage,
    stop_reason,
)
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import ChatChunk, ChatResponse, Delta, ToolCallDelta
from thanos_asgi.types import Usage as ChatUsage

if TYPE_CHECKING:
    from thanos_asgi.core.gateway import Reply

_encode = msgspec.json.Encoder().encode
_json = Decoder()
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def error_event(exc: ThanosError) -> bytes:
    return b"event: error\ndata: " + anthropic_error(exc) + b"\n\n"


def _message_id(upstream_id: str) -> str:
    if upstream_id.startswith("msg_"):
        return upstream_id
    return "msg_" + (upstream_id or unique_hex(96))


def _tool_id(call_id: str | None) -> str:
    return call_id or f"toolu_{unique_hex(96)}"  # some servers send "" (Gemini's /v1)


def _stop(finish: str | None, called_tools: bool) -> str:
    reason = stop_reason(finish)
    return "tool_use" if called_tools and reason == "end_turn" else reason


# -- non-stream ---------------------------------------------------------------------------------


def message(response: ChatResponse, model: str) -> MessageResponse:
    choice = response.choices[0] if response.choices else None
    content: list[ContentBlock] = []
    calls = choice.message.tool_calls if choice else None
    if choice is not None:
        reply = choice.message
        if reply.reasoning_content or reply.reasoning_signature:
            thinking, signature = reply.reasoning_content or "", reply.reasoning_signature or ""
            content.append(ContentBlock(type="thinking", thinking=thinking, signature=signature))
        text = reply.content or reply.refusal
        if text:
            content.append(ContentBlock(type="text", text=text))
        for call in calls or ():
            arguments = _arguments(call.function.arguments, call.function.name)
            name = call.function.name
            content.append(
                ContentBlock(type="tool_use", id=_tool_id(call.id), name=name, input=arguments)
            )
    return MessageResponse(
        id=_message_id(response.id),
        model=response.model or model,
        content=content,
        stop_reason=_stop(choice.finish_reason if choice else None, bool(calls)),
        usage=message_usage(response.usage),
    )


def _arguments(arguments: str, name: str) -> dict[str, Any]:
    try:
        value = _json.decode(arguments or "{}")
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"the arguments of the call to {name!r} are not a JSON object")
    return value


# -- streams ------------------------------------------------------------------------------------


async def events(reply: Reply) -> AsyncIterator[bytes]:
    """A canonical chunk stream as Anthropic's events (usage is recorded on the reply)."""
    assert reply.batches is not None
    stream = _Events(reply.model)
    async for batch in reply.batches:  # the events of one upstream read as one piece
        used = stream.batch(batch)
        if used is not None:
            reply.usage = used
        data = stream.flush()
        if data:
            yield data
    yield stream.end(reply)


_TEXT_HEAD = (  # a text delta's event up to its text (`%` the block's index)
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":'
)
_TEXT_TAIL = b"}}\n\n"
_TEXT_DELTA = _TEXT_HEAD + b"%b" + _TEXT_TAIL


def _frame(name: bytes, event: msgspec.Struct) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(event) + b"\n\n"


class _Events:
    """One stream: which block is open, which blocks are tool calls, how it ended."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.index = -1  # the current block
        self.open: str | None = None  # "thinking" | "text" | "tool_use" while a block is open
        self.tools: dict[int, int] = {}  # canonical tool call index -> block index
        self.finish: str | None = None
        self.out: list[bytes] = []
        self.texts: list[str] = []  # the open text block's deltas not yet in `out`

    def batch(self, chunks: list[ChatChunk]) -> ChatUsage | None:
        """Add the events of one read's `chunks` to those `flush` hands out next; the last
        usage among them. The usual chunk, more text for the open text block, is only kept:
        a run of them goes out in one encode (`_texts_out`)."""
        used = None
        texts = self.texts
        for chunk in chunks:
            if chunk.usage is not None:
                used = chunk.usage
            choices = chunk.choices
            if self.open == "text" and len(choices) == 1:  # the usual chunk: more of the text
                choice = choices[0]
                delta = choice.delta
                more = delta.reasoning_content or delta.reasoning_signature or delta.tool_calls
                if choice.index == 0 and delta.content and not more:
                    texts.append(delta.content)
                    self.finish = choice.finish_reason or self.finish
                    continue
            self.add(chunk)
        return used

    def add(self, chunk: ChatChunk) -> None:
        """`batch` for any one chunk."""
        self._texts_out()
        if not self.started:
            self._start(chunk.id, chunk.model)
        for choice in chunk.choices:
            if choice.index == 0:  # Anthropic has one answer per request
                self._delta(choice.delta)
                self.finish = choice.finish_reason or self.finish

    def _delta(self, delta: Delta) -> None:
        if delta.reasoning_content:
            self._emit(
                "thinking", BlockDelta(type="thinking_delta", thinking=delta.reasoning_content)
            )
        if delta.reasoning_signature:
            self._emit(
                "thinking", BlockDelta(type="signature_delta", signature=delta.reasoning_signature)
            )
        text = delta.content or delta.refusal
        if text:
            self._text(text)
        for call in delta.tool_calls or ():
            self._tool(call)

    def _text(self, text: str) -> None:
        """The most frequent event, as bytes: `_emit("text", BlockDelta(type="text_delta",
        text=text))` gives the same (tested), at a third of the cost."""
        if self.open != "text":
            self._open("text", ContentBlock(type="text", text=""))
        self.out.append(_TEXT_DELTA % (self.index, _encode(text)))

    def _emit(self, kind: str, delta: BlockDelta) -> None:
        if self.open != kind:
            block = ContentBlock(type=kind)
            if kind == "thinking":
                block.thinking, block.signature = "", ""
            else:
                block.text = ""
            self._open(kind, block)
        event = ContentBlockDelta(index=self.index, delta=delta)
        self.out.append(_frame(b"content_block_delta", event))

    def _tool(self, call: ToolCallDelta) -> None:
        block = self.tools.get(call.index)
        function = call.function
        if block is None:
            name = function.name if function and function.name else ""
            start = ContentBlock(type="tool_use", id=_tool_id(call.id), name=name, input={})
            self._open("tool_use", start)
            block = self.tools[call.index] = self.index
        if function is not None and function.arguments:
            delta = BlockDelta(type="input_json_delta", partial_json=function.arguments)
            self.out.append(
                _frame(b"content_block_delta", ContentBlockDelta(index=block, delta=delta))
            )

    def _open(self, kind: str, block: ContentBlock) -> None:
        self._close()
        self.index += 1
        self.open = kind
        event = ContentBlockStart(index=self.index, content_block=block)
        self.out.append(_frame(b"content_block_start", event))

    def _close(self) -> None:
        if self.open is not None:
            self.out.append(_frame(b"content_block_stop", ContentBlockStop(index=self.index)))
            self.open = None

    def _start(self, upstream_id: str, model: str) -> None:
        self.started = True
        self.model = model or self.model
        usage = Usage(input_tokens=0, output_tokens=0)
        head = MessageResponse(id=_message_id(upstream_id), model=self.model, usage=usage)
        self.out.append(_frame(b"message_start", MessageStart(message=head)))

    def _texts_out(self) -> None:
        """The kept text deltas as their events (what `_text` makes of each: tested)."""
        if self.texts:
            head = _TEXT_HEAD % self.index
            self.out.append(head + joined(self.texts, _TEXT_TAIL + head) + _TEXT_TAIL)
            self.texts.clear()

    def flush(self) -> bytes:
        self._texts_out()
        data = b"".join(self.out)
        self.out.clear()
        return data

    def end(self, reply: Reply) -> bytes:
        self._texts_out()
        if not self.started:
            self._start("", self.model)
        self._close()
        stop = StopInfo(stop_reason=_stop(self.finish, bool(self.tools)))
        event = MessageDelta(delta=stop, usage=message_usage(reply.usage))
        self.out.append(_frame(b"message_delta", event))
        self.out.append(MESSAGE_STOP)
        return self.flush()
