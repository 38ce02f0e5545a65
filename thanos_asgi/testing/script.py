"""What the fake provider answers: behaviours, and the script choosing one per request.

A `Script` maps model names to behaviours. A model the script does not name follows its name:

| model            | answer                                                                |
|------------------|-----------------------------------------------------------------------|
| `error-<status>` | fails with that HTTP status (`error-429`, `error-500`, `error-503`)     |
| `slow-<ms>`      | echoes after `<ms>` milliseconds (timeouts apply as to a real upstream) |
| `slow`           | echoes after one second                                                 |
| `tool-<name>`    | calls the tool `<name>` with `{}`                                       |
| `flaky`          | fails with 503 on the 1st, 3rd, 5th... call, echoes on the others      |
| anything else    | echoes: `"echo: <the last user message>"`                               |
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = ["Answer", "Behaviour", "Call", "Echo", "Fail", "Script"]


@dataclass(frozen=True)
class Call:
    """A tool call the fake model makes: `Call("get_weather", {"city": "Paris"})`."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)  # a str is sent as is


@dataclass(frozen=True)
class Answer:
    """A fixed answer: text, tool calls, or both.

    `chunks` is how a stream splits `text` (default: word by word, spaces kept); `delay` is
    the wait before the answer starts, `chunk_delay` the wait before every further chunk.
    `usage` is `(prompt_tokens, completion_tokens)`; by default both are word counts.
    `cut` ends a stream after its text with that error event instead of its normal end (the
    client has had the first bytes: no fallback is possible any more); a request that is
    not streamed gets the error answer.
    """

    text: str = ""
    calls: Sequence[Call] = ()
    chunks: Sequence[str] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    finish_reason: str | None = None  # default: "tool_calls" when there are calls, else "stop"
    usage: tuple[int, int] | None = None
    cut: Fail | None = None


@dataclass(frozen=True)
class Echo:
    """`prefix` + the text of the last user message, like `Answer` otherwise."""

    prefix: str = "echo: "
    delay: float = 0.0
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class Fail:
    """An error answer with HTTP `status` (OpenAI's error body; `retry_after` seconds, if
    given, as a `Retry-After` header), after `delay` seconds. The gateway treats it as it
    treats a real provider's: 429 and 5xx are retried and fall back, other 4xx are not."""

    status: int = 500
    message: str = ""
    retry_after: float | None = None
    delay: float = 0.0
    code: str | None = None


Behaviour: TypeAlias = Answer | Echo | Fail

_ERROR = re.compile(r"error-(\d{3})")
_SLOW = re.compile(r"slow(?:-(\d+))?")
_TOOL = re.compile(r"tool-(.+)")


class Script:
    """Behaviours by model name. Several behaviours for one model are used in turn, the
    last one for every later call:

        script = Script({"gpt-4o": Answer("Paris")})
        script.on("claude-sonnet-4-5", Fail(529), Answer("second try works"))
    """

    def __init__(
        self,
        rules: Mapping[str, Behaviour | Sequence[Behaviour]] | None = None,
        *,
        default: Behaviour | None = None,
    ) -> None:
        self._rules: dict[str, tuple[Behaviour, ...]] = {}
        self._calls: dict[str, int] = {}
        self.default = default
        for model, behaviours in (rules or {}).items():
            if isinstance(behaviours, Answer | Echo | Fail):
                self.on(model, behaviours)
            else:
                self.on(model, *behaviours)

    def on(self, model: str, *behaviours: Behaviour) -> Script:
        """Script `model` (replacing what it had, its call count restarting); returns self."""
        if not behaviours:
            raise ValueError("give at least one behaviour")
        self._rules[model] = behaviours
        self._calls.pop(model, None)
        return self

    @property
    def models(self) -> list[str]:
        """The scripted model names (the fake's `GET /models` lists them, and `echo`)."""
        return list(self._rules)

    def next(self, model: str) -> Behaviour:
        """The behaviour for this call of `model`."""
        count = self._calls.get(model, 0)
        self._calls[model] = count + 1
        scripted = self._rules.get(model)
        if scripted is not None:
            return scripted[min(count, len(scripted) - 1)]
        return self.default or by_name(model, count)


def by_name(model: str, count: int) -> Behaviour:
    """The behaviour a model name asks for (see the module's table); `count` earlier calls."""
    if match := _ERROR.fullmatch(model):
        return Fail(int(match.group(1)))
    if match := _SLOW.fullmatch(model):
        return Echo(delay=int(match.group(1) or 1000) / 1000)
    if match := _TOOL.fullmatch(model):
        return Answer(calls=[Call(match.group(1))])
    if model == "flaky" and count % 2 == 0:
        return Fail(503, "flaky: failing every other call")
    return Echo()
