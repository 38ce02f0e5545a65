"""The Responses API out: canonical answers -> the response object and its typed events.

A whole answer becomes `output` items in this order: a `reasoning` item (its text as one
summary), a `message` with one `output_text` part, then one `function_call` per tool call.
`finish_reason` length / content_filter -> status `incomplete` with that reason.

A stream is the event sequence the official SDK parses, every event numbered by
`sequence_number`: `response.created`, `response.in_progress`; per item
`response.output_item.added`, its deltas (`response.reasoning_summary_text.delta`,
`response.output_text.delta`, `response.function_call_arguments.delta`), their `.done`
events, `response.output_item.done`; then `response.completed` (or `response.incomplete`)
with usage. A failure after the first event is a last `error` event.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from thanos_asgi.core.gateway import Reply, close
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends._pieces import Pieces
from thanos_asgi.frontends._responses_types import (
    FunctionCallItem,
    Incomplete,
    InputTokensDetails,
    MessageItem,
    OutputItem,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ResponseObject,
    ResponseUsage,
    SummaryText,
)
from thanos_asgi.ids import unique_hex
from thanos_asgi.types import ChatChunk, ChatResponse, FunctionCall, Message, ToolCall, Usage

_encode = msgspec.json.Encoder().encode
_TEXT_DELTA = b"event: response.output_text.delta\ndata: "
_DELTA = b'%b%d,"delta":%b}\n\n'  # a text delta: its head (`_text_head`), number, text
_HEADS: dict[str, bytes] = {}  # an event's `event:` line and `data: `, by kind
_START = (
    b'event: response.created\ndata: {"response":%b,"type":"response.created",'
    b'"sequence_number":%d}\n\n'
    b'event: response.in_progress\ndata: {"response":%b,"type":"response.in_progress",'
    b'"sequence_number":%d}\n\n'
)
_MESSAGE_ADDED = (
    b'event: response.output_item.added\ndata: {"output_index":%d,"item":%b,'
    b'"type":"response.output_item.added","sequence_number":%d}\n\n'
    b'event: response.content_part.added\ndata: {"part":{"type":"output_text","text":"",'
    b'"annotations":[]},"item_id":%b,"output_index":%d,"content_index":0,'
    b'"type":"response.content_part.added","sequence_number":%d}\n\n'
)
_MESSAGE_DONE = (
    b'event: response.output_text.done\ndata: {"text":%b,"logprobs":[],"item_id":%b,'
    b'"output_index":%d,"content_index":0,"type":"response.output_text.done",'
    b'"sequence_number":%d}\n\n'
    b'event: response.content_part.done\ndata: {"part":%b,"item_id":%b,"output_index":%d,'
    b'"content_index":0,"type":"response.content_part.done","sequence_number":%d}\n\n'
    b'event: response.output_item.done\ndata: {"output_index":%d,"item":%b,'
    b'"type":"response.output_item.done","sequence_number":%d}\n\n'
)
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """An id no one can guess: a stored response's (its id is all it takes to read it). The
    second it was made comes first, in hex, as in OpenAI's own `resp_` ids, then 160 random
    bits. Later ids sort later, so a put adds to the end of the store's index, not to a random
    page of it that a large store must read back in: with 1,000,000 rows stored, 19 us a put
    against 45 for wholly random ids (`benchmarks/store_ids.py`)."""
    return f"{prefix}_{int(time.time()):08x}{secrets.token_hex(20)}"


def item_id(prefix: str) -> str:
    """An output item's id (`msg_`, `rs_`, `fc_`, `call_`): unique, not secret (`ids`)."""
    return f"{prefix}_{unique_hex(192)}"


def usage(value: Usage | None) -> ResponseUsage | None:
    if value is None:
        return None
    return ResponseUsage(
        input_tokens=value.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=value.cached_tokens),
        output_tokens=value.output_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=value.reasoning_tokens),
        total_tokens=value.total_tokens or value.prompt_tokens + value.output_tokens,
    )


def finish(response: ResponseObject, reason: str | None, used: Usage | None) -> ResponseObject:
    response.usage = usage(used)
    cut = _INCOMPLETE.get(reason or "")
    response.status = "incomplete" if cut else "completed"
    response.incomplete_details = Incomplete(reason=cut) if cut else None
    return response


def items(message: Any) -> list[OutputItem]:
    """The output items of an answer's message (or of a finished stream's pieces)."""
    out: list[OutputItem] = []
    thought = message.reasoning_content or getattr(message, "reasoning", None)
    if thought:
        out.append(ReasoningItem(id=item_id("rs"), summary=[SummaryText(text=thought)]))
    if message.content:
        out.append(MessageItem(id=item_id("msg"), content=[OutputText(text=message.content)]))
    out += [_call_item(call) for call in message.tool_calls or ()]
    return out


def _call_item(call: ToolCall) -> FunctionCallItem:
    return FunctionCallItem(
        id=item_id("fc"),
        call_id=call.id,
        name=call.function.name,
        arguments=call.function.arguments,
    )


def whole(shell: ResponseObject, answer: ChatResponse) -> ResponseObject:
    choice = answer.choices[0] if answer.choices else None
    shell.output = items(choice.message) if choice else []
    return finish(shell, choice.finish_reason if choice else None, answer.usage)


def assistant_turn(output: list[OutputItem]) -> Message:
    """The answer as the canonical assistant message the next turn continues from."""
    texts = [p.text for i in output if isinstance(i, MessageItem) for p in i.content]
    thoughts = [s.text for i in output if isinstance(i, ReasoningItem) for s in i.summary]
    calls = [
        ToolCall(id=i.call_id, function=FunctionCall(name=i.name, arguments=i.arguments))
        for i in output
        if isinstance(i, FunctionCallItem)
    ]
    return Message(
        role="assistant",
        content="".join(texts) or None,
        reasoning_content="".join(thoughts) or None,
        tool_calls=calls or None,
    )


def _text_head(ids: dict[str, Any]) -> bytes:
    """`response.output_text.delta` for the item of `ids`, up to its sequence number: what
    `Events.event` makes of it, keys in another order (tested)."""
    fields = {"type": "response.output_text.delta", **ids, "logprobs": []}
    return _TEXT_DELTA + _encode(fields)[:-1] + b',"sequence_number":'


class Events:
    """One stream's events, numbered; `feed` a chunk, `end` when the source is done."""

    def __init__(self, shell: ResponseObject) -> None:
        self.shell = shell
        self.sequence = 0
        self.open: OutputItem | None = None
        self.pieces = Pieces()  # the open item's text or arguments, joined when it closes
        self.calls: dict[int, FunctionCallItem] = {}
        self.reason: str | None = None
        self.text_head = b""  # the open message's text delta up to its sequence number

    def event(self, kind: str, **data: Any) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self.sequence
        self.sequence += 1
        head = _HEADS.get(kind)
        if head is None:  # (kinds are this module's names: a few dozen at most)
            head = _HEADS[kind] = b"event: " + kind.encode() + b"\ndata: "
        return head + _encode(data) + b"\n\n"

    def start(self) -> bytes:
        """`response.created` and `response.in_progress`: what `event` makes of them (tested),
        the response encoded once for both."""
        self.shell.status = "in_progress"
        first, self.sequence, shell = self.sequence, self.sequence + 2, _encode(self.shell)
        return _START % (shell, first, shell, first + 1)

    def batch(self, chunks: list[ChatChunk]) -> tuple[bytes, Usage | None]:
        """The events of one read's chunks (those `feed` writes), and the last usage among
        them. A chunk of more text for the open message (one choice, content only: most of
        a stream) is written here, without a call of its own."""
        out: list[bytes] = []
        used: Usage | None = None
        head = self.text_head
        for chunk in chunks:
            if chunk.usage is not None:
                used = chunk.usage
            choices = chunk.choices
            if head and len(choices) == 1:
                choice = choices[0]
                delta = choice.delta
                text = delta.content
                if (
                    text
                    and choice.finish_reason is None
                    and not (delta.reasoning_content or delta.reasoning or delta.tool_calls)
                ):
                    self.pieces.add(text)
                    out.append(_DELTA % (head, self.sequence, _encode(text)))
                    self.sequence += 1
                    continue
            out.append(self.feed(chunk))
            head = self.text_head
        return b"".join(out), used

    def feed(self, chunk: ChatChunk) -> bytes:
        if not chunk.choices:
            return b""
        choice = chunk.choices[0]
        delta, out = choice.delta, b""
        self.reason = choice.finish_reason or self.reason
        thought = delta.reasoning_content or delta.reasoning
        text = delta.content
        if text and self.text_head and not thought and not delta.tool_calls:  # the usual delta
            self.pieces.add(text)
            self.sequence += 1
            return _DELTA % (self.text_head, self.sequence - 1, _encode(text))
        if thought:
            out += self._text(ReasoningItem, thought)
        if delta.content:
            out += self._text(MessageItem, delta.content)
        for call in delta.tool_calls or ():
            out += self._call(call.index, call.id, call.function)
        return out

    def _text(self, kind: type[ReasoningItem] | type[MessageItem], text: str) -> bytes:
        out = b""
        if not isinstance(self.open, kind):
            out += self._close()
            out += self._open(kind(id=item_id("rs" if kind is ReasoningItem else "msg")))
        item, index = self.open, len(self.shell.output)
        self.pieces.add(text)
        if isinstance(item, ReasoningItem):
            ids = {"item_id": item.id, "output_index": index, "summary_index": 0}
            return out + self.event("response.reasoning_summary_text.delta", delta=text, **ids)
        assert isinstance(item, MessageItem)
        ids = {"item_id": item.id, "output_index": index, "content_index": 0}
        self.text_head = _text_head(ids)  # (this delta too: what `event` makes of it, tested)
        self.sequence += 1
        return out + _DELTA % (self.text_head, self.sequence - 1, _encode(text))

    def _call(self, position: int, call_id: str | None, function: Any) -> bytes:
        out = b""
        item = self.calls.get(position)
        if item is None or item is not self.open:
            out += self._close()
            name = (function.name if function else None) or ""
            item = FunctionCallItem(
                id=item_id("fc"), call_id=call_id or item_id("call"), name=name, arguments=""
            )
            self.calls[position] = item
            out += self._open(item)
        piece = (function.arguments if function else None) or ""
        if not piece:
            return out
        self.pieces.add(piece)
        ids = {"item_id": item.id, "output_index": len(self.shell.output)}
        return out + self.event("response.function_call_arguments.delta", delta=piece, **ids)

    def _open(self, item: OutputItem) -> bytes:
        self.open, self.pieces = item, Pieces()  # (`_close` cleared `text_head`)
        index = len(self.shell.output)
        item.status = "in_progress"  # as announced (`_close` completes it)
        if isinstance(item, MessageItem):  # its `output_item.added`, `content_part.added`
            first, self.sequence = self.sequence, self.sequence + 2  # (as `event`'s: tested)
            added = _MESSAGE_ADDED % (
                index,
                _encode(item),
                first,
                _encode(item.id),
                index,
                first + 1,
            )
            item.content = [OutputText(text="")]
            return added
        out = self.event("response.output_item.added", output_index=index, item=item)
        if isinstance(item, ReasoningItem):
            item.summary = [SummaryText(text="")]
            part = {"type": "summary_text", "text": ""}
            ids = {"item_id": item.id, "output_index": index, "summary_index": 0}
            out += self.event("response.reasoning_summary_part.added", part=part, **ids)
        return out

    def _close(self) -> bytes:
        item, self.open, self.text_head = self.open, None, b""
        if item is None:
            return b""
        index = len(self.shell.output)
        out = b""
        if isinstance(item, MessageItem):
            return self._message_done(item, index)
        if isinstance(item, ReasoningItem):
            ids = {"item_id": item.id, "output_index": index, "summary_index": 0}
            text = item.summary[0].text = self.pieces.text()
            out += self.event("response.reasoning_summary_text.done", text=text, **ids)
            out += self.event("response.reasoning_summary_part.done", part=item.summary[0], **ids)
        else:
            ids = {"item_id": item.id, "output_index": index}
            args = item.arguments = self.pieces.text()
            out += self.event("response.function_call_arguments.done", arguments=args, **ids)
        item.status = "completed"
        self.shell.output.append(item)
        return out + self.event("response.output_item.done", output_index=index, item=item)

    def _message_done(self, item: MessageItem, index: int) -> bytes:
        """A message's `output_text.done`, `content_part.done` and `output_item.done`: what
        `event` makes of them (tested), from one template."""
        part = item.content[0]
        part.text = self.pieces.text()
        item.status = "completed"
        self.shell.output.append(item)
        first, self.sequence = self.sequence, self.sequence + 3
        at = _encode(item.id), index
        text, whole = _encode(part.text), _encode(part)
        return _MESSAGE_DONE % (text, *at, first, whole, *at, first + 1, index, _encode(item),
                                first + 2)  # fmt: skip

    def end(self, used: Usage | None) -> bytes:
        out = self._close()
        response = finish(self.shell, self.reason, used)
        kind = "response.completed" if response.status == "completed" else "response.incomplete"
        return out + self.event(kind, response=response)

    def error(self, exc: ThanosError) -> bytes:
        return self.event("error", code=exc.code or exc.type, message=exc.message, param=exc.param)


async def stream(
    reply: Reply, events: Events, then: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """The events of the stream, then `then()` (which keeps the finished response). One
    generator for the whole stream: closing it closes the upstream's."""
    assert reply.batches is not None
    yield events.start()
    try:
        async for batch in reply.batches:  # the events of one upstream read as one piece
            data, used = events.batch(batch)
            if used is not None:
                reply.usage = used
            if data:
                yield data
    finally:
        await close(reply.batches)
    yield events.end(reply.usage)
    await then()  # (a failed or abandoned stream is not kept)


def created_now() -> int:
    return int(time.time())
