"""The `claude` command (Claude Code's CLI) as a provider: one process per request.

Each request runs, without a shell, in the gateway's working directory and environment minus
the other providers' API keys (`claude` has no use for them; its own `ANTHROPIC_*` stay),
`<path> -p --output-format stream-json --verbose --tools "" --strict-mcp-config
--no-session-persistence [--model M] [--system-prompt S]`: a model, not an agent (no built-in
tools, no MCP servers, no session files). The conversation goes on stdin: a lone user message
as it is, else a transcript ("User: ...", "Assistant: ...", "Tool result: ..."). System and
developer messages become `--system-prompt` (replacing Claude Code's own), or lead stdin when
too long for one argument. Model "default" sends no `--model`. Sampling parameters have no
flag and are not sent; tool definitions and non-text content are refused (400).

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

`timeout_ms` bounds every silence between output lines (600 s by default);
`max_concurrent_requests` (2 by default) bounds the processes running at once. A process and
its process group are killed as soon as its answer is closed, cancelled or abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import sys
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import msgspec

from ..exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from ..types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    Delta,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    PromptTokensDetails,
    ResponseMessage,
    TextPart,
    Usage,
)
from ._base import Relayed, timeouts_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import ProviderConfig
    from ..transport import Transport
    from . import ProviderSpec

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_LINE_LIMIT = 64 * 1024 * 1024  # one event holds a whole turn's text
_ARG_LIMIT = 32_000  # characters; Linux takes at most 128 KiB in one argument
_GRACE = 2.0  # seconds a `claude` that has answered gets to exit by itself
_LABELS = {"user": "User", "assistant": "Assistant"}  # tool and function: "Tool result"
_PIPE = asyncio.subprocess.PIPE
# a model, not an agent: no built-in tools, no MCP servers, no session files left behind
_QUIET = ("--tools", "", "--strict-mcp-config", "--no-session-persistence")
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


_event = msgspec.json.Decoder(_Event)
_message = msgspec.json.Decoder(_Message)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


def _clean(text: str) -> str:
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
        f"{_clean(detail or 'no detail')}",
        provider="",
        upstream_status=status,
        upstream_code=category or event.subtype or None,
    )


class _Run:
    """One `claude` process, read as canonical chunks. Failing, closing, cancelling or
    dropping it kills the process (and its group) at once and frees its slot."""

    def __init__(self, process: asyncio.subprocess.Process, owner: ClaudeCLI, model: str) -> None:
        self.process, self.owner = process, owner
        self.killed = self.released = False  # first: __del__ relies on them
        assert process.stdout is not None and process.stderr is not None
        self.stdout = process.stdout
        self.stderr = asyncio.ensure_future(_tail(process.stderr))
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model = model
        self.pending: deque[ChatChunk] = deque()
        self.wait = owner.first_wait  # the idle timeout once the first line is in
        self.role_sent = self.texted = self.done = False
        self.api_error: str | None = None
        owner.running.add(self)

    def __aiter__(self) -> _Run:
        return self

    async def __anext__(self) -> ChatChunk:
        await self.fill()
        if self.pending:
            return self.pending.popleft()
        await self.close(_GRACE)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        await self.close()

    def __del__(self) -> None:
        self.kill()
        self.release()

    async def feed(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            async with asyncio.timeout(self.wait):
                self.process.stdin.write(data)
                await self.process.stdin.drain()
            self.process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading; its output and exit status say why
        except BaseException as exc:
            await self.fail(exc)

    async def fill(self) -> None:
        """Read until a chunk is pending or the answer is complete."""
        try:
            while not self.pending and not self.done:
                await self._step()
        except BaseException as exc:
            await self.fail(exc)

    async def fail(self, exc: BaseException) -> NoReturn:
        await self.close()
        if isinstance(exc, TimeoutError):
            silent = UpstreamTimeout(f"the claude command was silent for {self.wait:g} s")
            raise self.owner.tag(silent) from None
        if isinstance(exc, UpstreamError):
            self.owner.tag(exc)
        raise exc

    async def _step(self) -> None:
        async with asyncio.timeout(self.wait):
            try:
                line = await self.stdout.readline()
            except ValueError:
                raise UpstreamProtocolError("the claude command wrote an over-long line") from None
        self.wait = self.owner.idle
        if not line:
            raise await self._failure()
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

    async def _failure(self) -> UpstreamError:
        """Why the output ended without a result: the exit status and stderr's last line."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_GRACE):
                await self.process.wait()
        self.kill()
        code = await self.process.wait()
        lines = (await self.stderr).decode("utf-8", "replace").strip().splitlines()
        last = f": {_clean(lines[-1])}" if lines else ""
        if code == 0:
            return UpstreamProtocolError(f"the claude command ended without a result{last}")
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return UpstreamError(f"the claude command {how}{last}")

    def kill(self) -> None:
        """Kill the process and all it started; synchronous, so safe in any cleanup."""
        if not self.killed:
            self.killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if sys.platform == "win32":
                    self.process.kill()
                else:
                    os.killpg(self.process.pid, signal.SIGKILL)  # a session of its own

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.owner.running.discard(self)
            self.owner.slots.release()

    async def close(self, grace: float = 0.0) -> None:
        """Give a process that has answered `grace` seconds to exit, then kill it."""
        try:
            if grace and self.process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(grace):
                        await self.process.wait()
            self.kill()
        finally:
            self.release()
        self.stderr.cancel()
        await self.process.wait()


async def _tail(stream: asyncio.StreamReader) -> bytes:
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-4096:]
    return tail


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the standard key variables of the providers other than Anthropic."""
    withheld = _withheld()
    return {name: value for name, value in environ.items() if name not in withheld}


@functools.cache
def _withheld() -> frozenset[str]:
    from . import SPECS

    every = {key for spec in SPECS.values() for key in spec.env_keys}
    return frozenset(every - set(SPECS["anthropic"].env_keys))


class ClaudeCLI:
    kind: ClassVar[str] = "claude_cli"
    wire: ClassVar[str] = ""  # nothing to relay: no client speaks stream-json

    def __init__(self, config: ProviderConfig, *, spec: ProviderSpec, transport: Transport) -> None:
        self.name = config.name
        self.default_model: str | None = config.model or spec.default_model
        self.models = list(config.models)
        self.command = config.path or "claude"
        timeouts = timeouts_of(config)
        self.first_wait = timeouts.first_byte or 600.0
        self.idle = timeouts.read or 600.0
        self.slots = asyncio.Semaphore(config.max_concurrent_requests or 2)
        self.running: weakref.WeakSet[_Run] = weakref.WeakSet()  # dropped answers die
        self.last_error: str | None = None

    def argv(self, model: str, system: str) -> list[str]:
        args = [self.command, "-p", "--output-format", "stream-json", "--verbose", *_QUIET]
        if model and model != "default":
            args += ["--model", model]
        return [*args, "--system-prompt", system] if system else args

    def tag(self, exc: UpstreamError) -> UpstreamError:
        exc.provider = exc.provider or self.name
        if not exc.message.startswith(f"{self.name}: "):
            exc.message = f"{self.name}: {exc.message}"
            exc.args = (exc.message,)
        self.last_error = exc.message
        return exc

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        run = await self._start(request, model)
        content: list[str] = []
        reasoning: list[str] = []
        finish, usage = "stop", None
        async for chunk in run:
            usage = chunk.usage or usage
            for part in chunk.choices:
                content.append(part.delta.content or "")
                reasoning.append(part.delta.reasoning_content or "")
                finish = part.finish_reason or finish
        text, thought = "".join(content), "".join(reasoning) or None
        message = ResponseMessage(content=text, reasoning_content=thought)
        choice = Choice(message=message, finish_reason=finish)
        return ChatResponse(
            id=run.id, created=run.created, model=run.model, choices=[choice], usage=usage
        )

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return await self._start(request, model)

    async def _start(self, request: ChatRequest, model: str) -> _Run:
        """Start `claude` and read up to its first chunk, so that early failures raise here."""
        system, prompt = render(request)
        if len(system) > _ARG_LIMIT:
            system, prompt = "", f"{system}\n\n{prompt}"
        await self.slots.acquire()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv(model, system),
                env=child_environment(os.environ),
                stdin=_PIPE,
                stdout=_PIPE,
                stderr=_PIPE,
                limit=_LINE_LIMIT,
                start_new_session=True,  # a process group of its own, to kill whole
            )
        except BaseException as exc:
            self.slots.release()
            if isinstance(exc, OSError):
                raise self._cannot_start(exc) from None
            raise
        run = _Run(process, self, "" if model == "default" else model)
        await run.feed(prompt.encode())
        await run.fill()
        return run

    def _cannot_start(self, exc: OSError) -> ProviderUnavailable:
        if isinstance(exc, FileNotFoundError):
            reason = f"the claude command was not found: set path in [providers.{self.name}]"
        else:
            reason = f"the claude command ({self.command}) cannot run: {exc.strerror or exc}"
        return ProviderUnavailable(reason, code="provider_not_configured")

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        raise ProviderUnavailable("the claude command does not relay", code="provider_unavailable")

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        raise ProviderUnavailable("the claude command makes no embeddings", param="model")

    async def list_models(self) -> list[str]:
        return list(self.models) or [m for m in (self.default_model,) if m]

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "command": self.command,
            "configured": shutil.which(self.command) is not None,
            "running": len(self.running),
            "last_error": self.last_error,
        }

    async def aclose(self) -> None:
        """Kill what still runs (the gateway is shutting down)."""
        for run in list(self.running):
            await run.close()
