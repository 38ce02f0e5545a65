"""The `claude` command adapter, driven against a fake `claude` (tests/fixtures/fake_claude.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers.base import Provider
from thanos_asgi.providers.claude_cli import ClaudeCLI, render, strip_ansi
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    EmbeddingRequest,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    Tool,
)

pytestmark = pytest.mark.anyio
FAKE = Path(__file__).parent / "fixtures" / "fake_claude.py"


@pytest.fixture(scope="module")
def claude(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `claude` that starts the fake with this interpreter (`env python3` may be a slow shim)."""
    path = tmp_path_factory.mktemp("bin") / "claude"
    path.write_text(
        f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE)!r}, run_name='__main__')\n"
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the fake writes what it received; reaches it through the inherited environment."""
    monkeypatch.setenv("FAKE_CLAUDE_DIR", str(tmp_path))
    return tmp_path


Make = Callable[..., ClaudeCLI]


@pytest.fixture
def make(claude: Path) -> Make:
    def build(**config: Any) -> ClaudeCLI:
        config.setdefault("path", str(claude))
        settings = ProviderConfig(name="claude_cli", kind="claude_cli", **config)
        # the gateway hands every adapter a transport; this one never uses it
        adapter: ClaudeCLI = load_adapter("claude_cli")(
            settings, spec=SPECS["claude_cli"], transport=None
        )
        return adapter

    return build


def ask(text: str, *, system: str | None = None, stream: bool = False) -> ChatRequest:
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=text))
    return ChatRequest(model="claude_cli", messages=messages, stream=stream)


def received(logs: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(logs.glob("*.json"))]


def text_of(chunks: list[ChatChunk], field: str = "content") -> str:
    return "".join(getattr(c.delta, field) or "" for chunk in chunks for c in chunk.choices)


async def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.02)
    return False


async def pid_of(logs: Path) -> int:
    for _ in range(250):
        seen = received(logs)
        if seen:
            return int(seen[0]["pid"])
        await asyncio.sleep(0.02)
    raise AssertionError("the fake never started")


# -- answers ------------------------------------------------------------------------------------


async def test_registered_and_a_provider(make: Make) -> None:
    adapter = make()
    assert isinstance(adapter, Provider)
    assert (adapter.kind, adapter.wire, adapter.default_model) == ("claude_cli", "", "default")
    assert await adapter.list_models() == ["default"]
    assert await make(models=["sonnet", "opus"]).list_models() == ["sonnet", "opus"]


async def test_chat_nonstream(logs: Path, make: Make) -> None:
    adapter = make(path=str(FAKE))  # the fixture itself, started through its shebang
    response = await adapter.chat(ask("hi"), "default")
    assert response.choices[0].message.content == "Hello from the fake claude."
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "claude-fake-4"  # from the init event
    usage = response.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (31, 5, 36)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 13
    assert usage.prompt_tokens_details.cache_creation_tokens == 11
    assert not adapter.running


async def test_stream_deltas_finish_and_usage(logs: Path, make: Make) -> None:
    chunks = [c async for c in await make().open_stream(ask("hi", stream=True), "sonnet")]
    assert text_of(chunks) == "Hello from the fake claude."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert {c.model for c in chunks} == {"sonnet"}  # the fake echoes --model in its events
    assert len({c.id for c in chunks}) == 1


async def test_other_providers_keys_are_withheld_from_the_child(
    logs: Path, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-SECRET")
    monkeypatch.setenv("XAI_API_KEY", "xai-SECRET")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-SECRET")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-its-own")
    await make().chat(ask("hi"), "default")
    (seen,) = received(logs)
    env = set(seen["env"])
    assert not env & {"OPENAI_API_KEY", "XAI_API_KEY", "GEMINI_API_KEY"}
    assert {"ANTHROPIC_API_KEY", "PATH", "FAKE_CLAUDE_DIR"} <= env  # claude's own, and the rest


async def test_argv_and_stdin(logs: Path, make: Make) -> None:
    await make().chat(ask("What is 2+2?", system="Be terse."), "claude-opus-4-1")
    (seen,) = received(logs)
    argv = seen["argv"]
    assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--tools") + 1] == ""
    assert argv[argv.index("--model") + 1] == "claude-opus-4-1"
    assert argv[argv.index("--system-prompt") + 1] == "Be terse."
    assert seen["stdin"] == "What is 2+2?"


async def test_default_model_sends_no_model_flag(logs: Path, make: Make) -> None:
    await make().chat(ask("hi"), "default")
    (seen,) = received(logs)
    assert "--model" not in seen["argv"] and "--system-prompt" not in seen["argv"]


async def test_conversation_rendered_as_transcript(logs: Path, make: Make) -> None:
    request = ChatRequest(
        model="x",
        messages=[
            Message(role="developer", content="Rule one."),
            Message(role="user", content=[TextPart(text="first"), TextPart(text="question")]),
            Message(role="assistant", content="an answer"),
            Message(role="user", content="follow-up"),
        ],
    )
    await make().chat(request, "default")
    (seen,) = received(logs)
    assert seen["stdin"] == "User: first\nquestion\n\nAssistant: an answer\n\nUser: follow-up"
    assert seen["argv"][seen["argv"].index("--system-prompt") + 1] == "Rule one."


async def test_long_system_prompt_goes_on_stdin(logs: Path, make: Make) -> None:
    assert render(ask("q", system="s" * 40_000)) == ("s" * 40_000, "q")
    await make().chat(ask("q", system="s" * 40_000), "default")  # too long for one argument
    (seen,) = received(logs)
    assert "--system-prompt" not in seen["argv"]
    assert seen["stdin"] == "s" * 40_000 + "\n\nq"


async def test_ansi_stripped_from_text(logs: Path, make: Make) -> None:
    chunks = [c async for c in await make().open_stream(ask("[[ansi]]"), "default")]
    assert text_of(chunks) == "bold and green"
    assert strip_ansi("\x1b]0;title\x07plain\x1b[2K") == "plain"


async def test_thinking_becomes_reasoning(logs: Path, make: Make) -> None:
    response = await make().chat(ask("[[think]]"), "default")
    assert response.choices[0].message.reasoning_content == "hmm"
    assert response.choices[0].message.content == "thought it over"


async def test_stray_stdout_and_heavy_stderr_are_harmless(logs: Path, make: Make) -> None:
    response = await make().chat(ask("[[noisy]]"), "default")
    assert response.choices[0].message.content == "fine"


# -- refusals and failures ------------------------------------------------------------------------


async def test_error_result_maps_to_status_error(logs: Path, make: Make) -> None:
    adapter = make()
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.chat(ask("[[error]]"), "default")
    exc = caught.value
    assert exc.upstream_status == 529 and exc.status == 503 and exc.retryable
    assert exc.provider == "claude_cli"
    assert "overloaded_error" in exc.message and exc.message.startswith("claude_cli: ")
    assert adapter.last_error == exc.message
    assert not adapter.running


async def test_api_error_message_is_not_content(logs: Path, make: Make) -> None:
    with pytest.raises(UpstreamStatusError) as caught:
        await make().open_stream(ask("[[login]]", stream=True), "default")  # before any chunk
    exc = caught.value
    assert exc.upstream_status == 401 and exc.upstream_code == "authentication_failed"
    assert exc.retryable  # a credential failure: the next candidate may work
    reported = "claude reported authentication_failed: Not logged in \u00b7 Please run /login"
    assert exc.message == f"claude_cli: {reported}"


async def test_error_subtype_maps_to_status_error(logs: Path, make: Make) -> None:
    with pytest.raises(UpstreamStatusError) as caught:
        await make().open_stream(ask("[[max-turns]]"), "default")
    assert caught.value.upstream_code == "error_max_turns"
    assert "too many turns" in caught.value.message


async def test_nonzero_exit_reports_last_stderr_line_scrubbed(logs: Path, make: Make) -> None:
    with pytest.raises(UpstreamError) as caught:
        await make().chat(ask("[[exit]]"), "default")
    message = caught.value.message
    assert "exited with status 3" in message
    assert message.endswith("Invalid API key \u00b7 Please run /login")
    assert "\x1b" not in message and "loading config" not in message


async def test_missing_executable_is_unavailable(tmp_path: Path, make: Make) -> None:
    adapter = make(path=str(tmp_path / "nowhere" / "claude"))
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.chat(ask("hi"), "default")
    assert "the claude command was not found: set path in [providers.claude_cli]" in str(
        caught.value
    )
    assert adapter.status()["configured"] is False
    assert adapter.slots._value == 2  # the slot came back


async def test_not_executable_is_unavailable(tmp_path: Path, make: Make) -> None:
    script = tmp_path / "claude"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ProviderUnavailable, match="cannot run"):
        await make(path=str(script)).chat(ask("hi"), "default")


async def test_refuses_tools_and_images(make: Make) -> None:
    tool = Tool(function=FunctionDef(name="f"))
    with pytest.raises(InvalidRequest):
        await make().chat(ChatRequest(model="x", messages=ask("hi").messages, tools=[tool]), "m")
    image = ImagePart(image_url=ImageURL(url="data:image/png;base64,AA=="))
    request = ChatRequest(model="x", messages=[Message(role="user", content=[image])])
    with pytest.raises(InvalidRequest, match="text only"):
        await make().chat(request, "m")


async def test_relay_and_embed_are_unavailable(make: Make) -> None:
    with pytest.raises(ProviderUnavailable):
        await make().relay({}, "m", stream=False)
    with pytest.raises(ProviderUnavailable):
        await make().embed(EmbeddingRequest(model="m", input="x"), "m")


async def test_silence_times_out_and_kills(logs: Path, make: Make) -> None:
    adapter = make(first_byte_timeout_ms=10_000, timeout_ms=400)  # startup may take a while
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"silent for 0\.4 s"):
        await adapter.chat(ask("[[silent]]"), "default")
    assert time.monotonic() - started < 5
    assert await gone(await pid_of(logs))
    assert not adapter.running


async def test_silence_mid_stream_times_out(logs: Path, make: Make) -> None:
    adapter = make(first_byte_timeout_ms=5000, idle_timeout_ms=100)
    stream = await adapter.open_stream(ask("[[drip]]"), "default")  # a line every 0.2 s
    with pytest.raises(UpstreamTimeout):
        async for _ in stream:
            pass
    assert await gone(await pid_of(logs))


# -- the process's lifetime -----------------------------------------------------------------------


async def test_closing_the_stream_kills_the_process(logs: Path, make: Make) -> None:
    adapter = make()
    stream = await adapter.open_stream(ask("[[drip]]", stream=True), "default")
    first = await anext(stream)
    assert text_of([first]) == "tick 0 "
    pid = await pid_of(logs)
    os.kill(pid, 0)  # alive, dripping
    await stream.aclose()  # type: ignore[attr-defined]
    assert await gone(pid, within=1.0)
    assert not adapter.running and adapter.slots._value == 2


async def test_cancelling_the_consumer_kills_the_process(logs: Path, make: Make) -> None:
    adapter = make()

    async def consume() -> None:
        async for _ in await adapter.open_stream(ask("[[drip]]"), "default"):
            pass

    task = asyncio.create_task(consume())
    pid = await pid_of(logs)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid, within=1.0)
    assert adapter.slots._value == 2


async def test_abandoned_stream_is_killed(logs: Path, make: Make) -> None:
    adapter = make()
    stream = await adapter.open_stream(ask("[[drip]]"), "default")
    pid = await pid_of(logs)
    del stream  # dropped without aclose()
    assert await gone(pid, within=1.0)
    assert adapter.slots._value == 2


async def test_aclose_kills_what_runs(logs: Path, make: Make) -> None:
    adapter = make()
    stream = await adapter.open_stream(ask("[[drip]]"), "default")
    pid = await pid_of(logs)
    await adapter.aclose()
    assert await gone(pid, within=1.0)
    assert adapter.status()["running"] == 0
    del stream


async def test_concurrency_limit_runs_one_after_another(logs: Path, make: Make) -> None:
    adapter = make(max_concurrent_requests=1)
    answers = await asyncio.gather(*(adapter.chat(ask("[[slow]]"), "default") for _ in range(3)))
    assert [a.choices[0].message.content for a in answers] == ["slow answer"] * 3
    spans = sorted((seen["start"], seen["end"]) for seen in received(logs))
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # the next one started only after the previous one finished


async def test_default_concurrency_is_two(logs: Path, make: Make) -> None:
    adapter = make()
    await asyncio.gather(*(adapter.chat(ask("[[slow]]"), "default") for _ in range(3)))
    spans = sorted((seen["start"], seen["end"]) for seen in received(logs))
    overlapping = sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)
    assert overlapping >= 1  # two ran side by side
    assert spans[2][0] >= min(spans[0][1], spans[1][1])  # the third waited for a slot


async def test_a_failing_claude_command_leaves_no_cycles(logs: Path, make: Make) -> None:
    """An error the command reports, an exit with an error status, silence: each is raised
    and let go of, not held by the frame that raised it (tests/test_garbage_failures.py)."""
    from tests.test_garbage import cyclic_garbage

    adapter = make(timeout_ms=400)
    await adapter.chat(ask("hi"), "default")  # warm
    with cyclic_garbage() as found:
        for prompt in ("[[error]]", "[[exit]]", "[[silent]]"):
            with contextlib.suppress(UpstreamError):
                await adapter.chat(ask(prompt), "default")
    assert sorted({type(o).__qualname__ for o in found}) == []
