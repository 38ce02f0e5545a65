"""The `claude` command (Claude Code's CLI) as a provider: one process per request.

Each request runs, without a shell, in the gateway's working directory and environment minus
the other providers' API keys (`claude` has no use for them; its own `ANTHROPIC_*` stay),
`<path> -p --output-format stream-json --verbose --tools "" --strict-mcp-config
--no-session-persistence [--model M] [--system-prompt S]`: a model, not an agent (no built-in
tools, no MCP servers, no session files). The conversation goes on stdin (`render`). System and
developer messages become `--system-prompt` (replacing Claude Code's own), or lead stdin when
too long for one argument. Model "default" sends no `--model`. Sampling parameters have no
flag and are not sent. What goes in and comes out, and how it is read: `_claude_cli_codec`.

`timeout_ms` bounds every silence between output lines (600 s by default);
`max_concurrent_requests` (2 by default) bounds the processes running at once. A process and
its process group are killed as soon as its answer is closed, cancelled or abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from thanos_asgi.exceptions import (
    ProviderUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from thanos_asgi.providers._claude_cli_codec import Stream, chat_response, clean, render, strip_ansi
from thanos_asgi.providers.base import Relayed, timeouts_of
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import ProviderSpec
    from thanos_asgi.upstream import Transport

__all__ = ["ClaudeCLI", "child_environment", "render", "strip_ansi"]

_LINE_LIMIT = 64 * 1024 * 1024  # one event holds a whole turn's text
_ARG_LIMIT = 32_000  # characters; Linux takes at most 128 KiB in one argument
_GRACE = 2.0  # seconds a `claude` that has answered gets to exit by itself
_PIPE = asyncio.subprocess.PIPE
# a model, not an agent: no built-in tools, no MCP servers, no session files left behind
_QUIET = ("--tools", "", "--strict-mcp-config", "--no-session-persistence")


class _Run:
    """One `claude` process, read as canonical chunks. Failing, closing, cancelling or
    dropping it kills the process (and its group) at once and frees its slot."""

    def __init__(self, process: asyncio.subprocess.Process, owner: ClaudeCLI, model: str) -> None:
        self.process, self.owner = process, owner
        self.killed = self.released = False  # first: __del__ relies on them
        assert process.stdout is not None and process.stderr is not None
        self.stdout = process.stdout
        self.stderr = asyncio.ensure_future(_tail(process.stderr))
        self.stream = Stream(model)  # what the output says so far
        self.wait = owner.first_wait  # the idle timeout once the first line is in
        owner.running.add(self)

    def __aiter__(self) -> _Run:
        return self

    async def __anext__(self) -> ChatChunk:
        await self.fill()
        if self.stream.pending:
            return self.stream.pending.popleft()
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
            while not self.stream.pending and not self.stream.done:
                await self._step()
        except BaseException as exc:
            await self.fail(exc)

    async def fail(self, exc: BaseException) -> NoReturn:
        """Close, then raise `exc` (a timeout as the adapter's own). `exc` is let go of as it
        is raised: its traceback holds this frame, which would hold it in a cycle."""
        await self.close()
        try:
            if isinstance(exc, TimeoutError):
                silent = f"the claude command was silent for {self.wait:g} s"
                raise self.owner.tag(UpstreamTimeout(silent)) from None
            if isinstance(exc, UpstreamError):
                self.owner.tag(exc)
            raise exc
        finally:
            del exc

    async def _step(self) -> None:
        async with asyncio.timeout(self.wait):
            try:
                line = await self.stdout.readline()
            except ValueError:
                raise UpstreamProtocolError("the claude command wrote an over-long line") from None
        self.wait = self.owner.idle
        if not line:
            raise await self._failure()
        self.stream.feed(line)

    async def _failure(self) -> UpstreamError:
        """Why the output ended without a result: the exit status and stderr's last line."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_GRACE):
                await self.process.wait()
        self.kill()
        code = await self.process.wait()
        lines = (await self.stderr).decode("utf-8", "replace").strip().splitlines()
        last = f": {clean(lines[-1])}" if lines else ""
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
    from thanos_asgi.providers import SPECS

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
        return chat_response(run.stream, [chunk async for chunk in run])

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
