"""The `claude` command's input and output <-> canonical: pure functions and stream state, no I/O.

Input: the conversation goes on stdin: a lone user message as it is, else a transcript
("User: ...", "Assistant: ...", "Tool result: ..."). System and developer messages become the
system prompt. Tool definitions and non-text content are refused (400).

Output, one JSON event a line (Claude Code docs: code.claude.com/docs/en/headless and
/cli-reference; checked against `claude --help` and a real run of Claude Code 2.1.330):
`{"type":"system","subtype":"init","model":...}` first; then per model turn, whole,
`{"type":"assistant","message":{Anthropic message: model, content blocks (text, thinking,
tool_use), stop_reason, usage}}` (token deltas would need `--include-partial-messages`); last
`{"type":"result","subtype":"success" | "error_max_turns" | "error_during_execution" | ...,
"is_error":bool, "result":text, "usage":{input_tokens, output_tokens, cache_read_input_tokens,
cache_creation_input_tokens}, "total_cost_usd":..., "stop_reason":...}`. A failed API call is an
assistant event with `"is_api_error_message": true`, `"error": <category>` and the error as its
text (not an answer: skipped), then a result with subtype "success", `is_error: true`, the text
in `result` and the HTTP status, when known, in `api_error_status`. Other events are skipped.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Any

import msgspec

from thanos_asgi.exceptions import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from thanos_asgi.ids import unique_hex
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    Delta,
    Message,
    PromptTokensDetails,
    ResponseMessage,
    TextPart,
    Usage,
)

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_LABELS = {"user": "User", "assistant": "Assistant"}  # tool and function: "Tool result"
# API error categories (assistant events' `error`) with an HTTP meaning; others count as 500
_STATUS_OF = {"authentication_failed": 401, "rate_limit": 429, "invalid_request": 400}


class _Block(msgspec.Struct):
    type: str = ""
    text: str = ""
    thinking: str = ""


class _Message(msgspec.Struct):
    model: str = ""
    content: list[_Block] = []


class _Tokens(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Event(msgspec.Struct):
    type: str = ""
    subtype: str = ""
    model: str = ""  # system/init
    message: msgspec.Raw = msgspec.Raw(b"")  # decoded for assistant events only
    result: Any = None
    is_error: bool = False
    usage: _Tokens | None = None
    api_error_status: Any = None
    errors: Any = None
    stop_reason: str | None = None
    error: Any = None  # assistant: an API error's category ("authentication_failed", ...)
    is_api_error_message: bool = False  # assistant: its text is that error, not an answer


_event = Decoder(_Event)
_message = Decoder(_Message)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


def clean(text: str) -> str:
    """`text` fit for an error message: no terminal escapes, trimmed, at most 500 characters."""
    return strip_ansi(text).strip()[:500]


def render(request: ChatRequest) -> tuple[str, str]:
    """(system prompt, stdin text) for a conversation; InvalidRequest for what has no text."""
    if request.tools and request.tool_choice != "none":
        raise InvalidRequest("the claude command takes no tool definitions", param="tools")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(request.messages):
        text = _text(message, index)
        if message.role in ("system", "developer"):
            system.append(text)
            continue
        for call in message.tool_calls or ():
            text += f"\n[called {call.function.name}({call.function.arguments})]"
        turns.append((message.role, text))
    if not turns:
        raise InvalidRequest("the conversation has no user message", param="messages")
    if len(turns) == 1 and turns[0][0] == "user":
        return "\n\n".join(system), turns[0][1]
    return "\n\n".join(system), "\n\n".join(
        f"{_LABELS.get(r, 'Tool result')}: {t}" for r, t in turns
    )


def _text(message: Message, index: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = [part.text for part in content if isinstance(part, TextPart)]
    if len(texts) < len(content):
        where = f"messages[{index}]"
        raise InvalidRequest(f"{where}: the claude command takes text only", param=where)
    return "\n".join(texts)


def _usage(tokens: _Tokens) -> Usage:
    """OpenAI's counting: prompt tokens include cache reads and writes, also listed apart."""
    cached = tokens.cache_read_input_tokens or 0
    written = tokens.cache_creation_input_tokens or 0
    prompt = (tokens.input_tokens or 0) + cached + written
    completion = tokens.output_tokens or 0
    details = None
    if cached or written:
        details = PromptTokensDetails(cached_tokens=cached, cache_creation_tokens=written)
    total = prompt + completion
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        prompt_tokens_details=details,
    )


def _result_error(event: _Event, category: str | None) -> UpstreamStatusError:
    detail = event.result if isinstance(event.result, str) else None
    if not detail and isinstance(event.errors, list):
        detail = "; ".join(map(str, event.errors))
    status = event.api_error_status
    if not (isinstance(status, int) and status >= 400):
        status = _STATUS_OF.get(category or "", 500)
    return UpstreamStatusError(
        f"claude reported {category or event.subtype or 'an error'}: "
        f"{clean(detail or 'no detail')}",
        provider="",
        upstream_status=status,
        upstream_code=category or event.subtype or None,
    )


class Stream:
    """One answer's state: its id, its model, the chunks read and not yet taken (`pending`),
    and whether the result has come (`done`)."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{unique_hex(96)}"
        self.created = int(time.time())
        self.model = model
        self.pending: deque[ChatChunk] = deque()
        self.role_sent = self.texted = self.done = False
        self.api_error: str | None = None

    def feed(self, line: bytes) -> None:
        """Read one line of output; a result that reports an error raises it."""
        if not line.startswith(b"{"):
            return  # not an event: a stray notice on stdout
        try:
            event = _event.decode(line)
            message = _message.decode(event.message) if event.type == "assistant" else None
        except msgspec.DecodeError as exc:
            raise UpstreamProtocolError(f"unreadable event from claude: {exc}") from None
        if event.type == "system" and event.subtype == "init":
            self.model = event.model or self.model
        elif message is not None:
            self._assistant(event, message)
        elif event.type == "result":
            self._result(event)

    def _assistant(self, event: _Event, message: _Message) -> None:
        if event.is_api_error_message or event.error:  # a failed call: the result reports it
            self.api_error = str(event.error or "api_error")
            return
        self.model = message.model or self.model
        for block in message.content:
            if block.type == "text" and block.text:
                self._push(Delta(content=strip_ansi(block.text)))
                self.texted = True
            elif block.type == "thinking" and block.thinking:
                self._push(Delta(reasoning_content=strip_ansi(block.thinking)))

    def _result(self, event: _Event) -> None:
        if event.is_error or event.subtype not in ("success", ""):
            raise _result_error(event, self.api_error)
        if not self.texted and isinstance(event.result, str) and event.result:
            self._push(Delta(content=strip_ansi(event.result)))
        self._push(Delta(), "length" if event.stop_reason == "max_tokens" else "stop")
        if event.usage is not None:
            self.pending.append(self._chunk([], _usage(event.usage)))
        self.done = True

    def _push(self, delta: Delta, finish_reason: str | None = None) -> None:
        if not self.role_sent:
            delta.role, self.role_sent = "assistant", True
        self.pending.append(self._chunk([ChunkChoice(delta=delta, finish_reason=finish_reason)]))

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )


def chat_response(stream: Stream, chunks: list[ChatChunk]) -> ChatResponse:
    """The whole answer that `chunks`, all of `stream`'s, make."""
    content: list[str] = []
    reasoning: list[str] = []
    finish, usage = "stop", None
    for chunk in chunks:
        usage = chunk.usage or usage
        for part in chunk.choices:
            content.append(part.delta.content or "")
            reasoning.append(part.delta.reasoning_content or "")
            finish = part.finish_reason or finish
    text, thought = "".join(content), "".join(reasoning) or None
    message = ResponseMessage(content=text, reasoning_content=thought)
    choice = Choice(message=message, finish_reason=finish)
    return ChatResponse(
        id=stream.id, created=stream.created, model=stream.model, choices=[choice], usage=usage
    )
