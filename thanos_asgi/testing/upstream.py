"""`FakeUpstream`: an OpenAI-compatible provider that lives in the process, as a `Transport`.

It answers `POST .../chat/completions` (JSON or SSE, tool calls, usage), `POST .../embeddings`
and `GET .../models` as a real OpenAI-compatible server does, following a `Script`; nothing
touches the network. The gateway's own adapters, retries, fallbacks, pass-through relay and
accounting run exactly as against a real provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from thanos_asgi.exceptions import UpstreamTimeout
from thanos_asgi.testing.script import Answer, Behaviour, Call, Echo, Fail, Script
from thanos_asgi.upstream.base import Timeouts, UpstreamResponse

__all__ = ["FakeRequest", "FakeUpstream"]

_WORDS = re.compile(r"\S+\s*|\s+")
_encode = msgspec.json.encode


@dataclass(frozen=True)
class FakeRequest:
    """A request the fake received: `json` is the decoded body (None without one)."""

    method: str
    url: str
    headers: Mapping[str, str]
    json: Any


class _Response:
    """An `UpstreamResponse` over parts produced on demand, `pause` seconds apart."""

    def __init__(self, status: int, headers: dict[str, str], parts: list[bytes], pause: float):
        self.status = status
        self.headers: Mapping[str, str] = headers
        self._parts, self._pause, self.closed = parts, pause, False

    async def read(self) -> bytes:
        data = b"".join([part async for part in self.iter_bytes()])
        await self.aclose()
        return data

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for index, part in enumerate(self._parts):
            if self.closed:
                return
            if index and self._pause:
                await asyncio.sleep(self._pause)
            yield part

    async def aclose(self) -> None:
        self.closed = True


class FakeUpstream:
    """An in-process OpenAI-compatible server following `script` (a `Script`; by default the
    model names decide: see `thanos_asgi.testing.script`). Every request is kept in
    `requests`. Pass it as a provider's transport: `Gateway(config, transports={"ai": fake})`.
    """

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[FakeRequest] = []
        self._ids = itertools.count(1)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> UpstreamResponse:
        data = msgspec.json.decode(body) if body else None
        self.requests.append(FakeRequest(method, url, dict(headers), data))
        path = url.split("?", 1)[0]
        if method == "GET" and path.endswith("/models"):
            ids = ["echo", *self.script.models]
            listed = [{"id": model, "object": "model"} for model in ids]
            return _json(200, {"object": "list", "data": listed})
        if method != "POST" or not isinstance(data, dict):
            return _error(Fail(404, f"the fake serves no {method} {path}"))
        if path.endswith("/embeddings"):
            return _json(200, _embeddings(data))
        if not path.endswith("/chat/completions"):
            return _error(Fail(404, f"the fake serves no {method} {path}"))
        behaviour = self.script.next(str(data.get("model", "")))
        await _wait(behaviour.delay, timeouts)
        if isinstance(behaviour, Fail):
            return _error(behaviour)
        answer = _as_answer(behaviour, data)
        if answer.cut is not None and not data.get("stream"):
            return _error(answer.cut)
        return self._answer(data, answer)

    async def aclose(self) -> None:
        """Nothing to release; here so the fake is a complete `Transport`."""

    def _answer(self, request: dict[str, Any], answer: Answer) -> UpstreamResponse:
        completion_id = f"chatcmpl-fake-{next(self._ids)}"
        model = str(request.get("model", ""))
        usage = _usage(request, answer)
        finish = answer.finish_reason or ("tool_calls" if answer.calls else "stop")
        if not request.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
            if answer.calls:
                message["tool_calls"] = [_call(i, c) for i, c in enumerate(answer.calls)]
            choice = {"index": 0, "message": message, "finish_reason": finish}
            head = {"id": completion_id, "object": "chat.completion", "created": 0, "model": model}
            return _json(200, {**head, "choices": [choice], "usage": usage})
        options = request.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = _stream(completion_id, model, answer, finish, usage if with_usage else None)
        headers = {"content-type": "text/event-stream"}
        return _Response(200, headers, events, answer.chunk_delay)


async def _wait(delay: float, timeouts: Timeouts) -> None:
    """Sleep `delay`, or raise UpstreamTimeout as a real transport would when it is too long."""
    limits = [t for t in (timeouts.first_byte, timeouts.read, timeouts.total) if t is not None]
    limit = min(limits, default=None)
    if limit is not None and delay > limit:
        await asyncio.sleep(limit)
        raise UpstreamTimeout("the provider did not answer in time")
    if delay:
        await asyncio.sleep(delay)


def _last_user_text(request: Mapping[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _as_answer(behaviour: Behaviour, request: Mapping[str, Any]) -> Answer:
    if isinstance(behaviour, Echo):
        text = behaviour.prefix + _last_user_text(request)
        return Answer(text, chunk_delay=behaviour.chunk_delay)
    assert isinstance(behaviour, Answer)
    return behaviour


def _usage(request: Mapping[str, Any], answer: Answer) -> dict[str, int]:
    if answer.usage is not None:
        prompt, completion = answer.usage
    else:
        messages = request.get("messages") or []
        texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
        prompt = max(1, sum(len(t.split()) for t in texts))
        completion = len(answer.text.split()) + len(answer.calls)
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _call(index: int, call: Call) -> dict[str, Any]:
    arguments = call.arguments
    text = arguments if isinstance(arguments, str) else _encode(dict(arguments)).decode()
    function = {"name": call.name, "arguments": text}
    return {"id": f"call_fake_{index}", "type": "function", "function": function}


def _stream(
    completion_id: str, model: str, answer: Answer, finish: str, usage: dict[str, int] | None
) -> list[bytes]:
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": 0, "model": model}

    def event(delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return b"data: " + _encode({**head, "choices": [choice]}) + b"\n\n"

    pieces = list(answer.chunks) if answer.chunks is not None else _WORDS.findall(answer.text)
    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": piece}) for piece in pieces]
    calls = [{"index": i, **_call(i, call)} for i, call in enumerate(answer.calls)]
    events += [event({"tool_calls": [call]}) for call in calls]
    if answer.cut is not None:  # an error event, as OpenAI-compatible servers send one
        return [*events, b"data: " + _encode({"error": _error_body(answer.cut)}) + b"\n\n"]
    events.append(event({}, finish))
    if usage is not None:
        events.append(b"data: " + _encode({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _embeddings(request: Mapping[str, Any]) -> dict[str, Any]:
    """Eight numbers per input, the same for the same text."""
    inputs = request.get("input")
    texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs or []]
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(text)}
        for i, text in enumerate(texts)
    ]
    tokens = sum(len(text.split()) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "model": request.get("model"), "data": data, "usage": usage}


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(value / 2**32, 6) for value in struct.unpack("<8I", digest)]


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> _Response:
    head = {"content-type": "application/json", **(headers or {})}
    return _Response(status, head, [_encode(body)], 0.0)


def _error_body(fail: Fail) -> dict[str, Any]:
    kind = "rate_limit_error" if fail.status == 429 else "fake_error"
    message = fail.message or f"the fake provider was told to fail with {fail.status}"
    return {"message": message, "type": kind, "code": fail.code, "param": None}


def _error(fail: Fail) -> _Response:
    headers = {} if fail.retry_after is None else {"retry-after": f"{fail.retry_after:g}"}
    return _json(fail.status, {"error": _error_body(fail)}, headers)
