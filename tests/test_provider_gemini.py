"""The Gemini API adapter, replayed from every recording in cassettes/gemini/ and from
handwritten answers for what the recordings do not show."""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cassettes import Interaction, load, replay, sse_data
from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers._gemini_ids import call_id, signature_of
from thanos_asgi.providers._gemini_schema import clean_schema
from thanos_asgi.providers.gemini import Gemini
from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.types import (
    AudioPart,
    ChatChunk,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    InputAudio,
    JSONSchemaFormat,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
)
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio

KEY = "AIzaSyTEST-not-a-real-key-0123456789"
CALL_ID = re.compile(r"call_[0-9a-f]{12}_\d+(_ts_[A-Za-z0-9_-]+)?")
STREAMS = [
    "gemini/streamGenerateContent-sse-text.pydantic-ai.yaml",
    "gemini/streamGenerateContent-sse-function-call.pydantic-ai.yaml",
    "gemini/streamGenerateContent-sse-thinking.pydantic-ai.yaml",
    "gemini/streamGenerateContent-sse-max-tokens.mirascope.yaml",
    "gemini/streamGenerateContent-sse-tool-call-roundtrip.mirascope.yaml",
    "gemini/stream-function-call-thought-signature.vercel-ai.chunks.txt",
]
NONSTREAMS = [
    "gemini/generateContent-nonstream-text.pydantic-ai.yaml",
    "gemini/generateContent-nonstream-function-call.pydantic-ai.yaml",
    "openai/chat-nonstream-tool-calls-multi-provider.pydantic-ai.yaml",  # its Gemini half
]
Handler = Callable[[httpx.Request], httpx.Response]


def make(handler: Handler, *, key: str | None = KEY, name: str = "gemini") -> Gemini:
    config = ProviderConfig(name=name, kind="gemini", api_key=key)
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return Gemini(config, spec=SPECS["gemini"], transport=transport)


def ask(*messages: Message, **extra: Any) -> ChatRequest:
    return ChatRequest(model="alias", messages=list(messages), **extra)


def user(text: str = "hi") -> Message:
    return Message(role="user", content=text)


class Serve:
    """Answers every request with one body; remembers what was sent."""

    def __init__(self, body: Any, status: int = 200, headers: dict[str, str] | None = None):
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.status, self.headers = status, headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, headers=self.headers, content=self.body)

    @property
    def sent(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)


def event(*parts: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    if index:
        candidate["index"] = index
    return {"candidates": [candidate], "responseId": "resp-1", "modelVersion": "gemini-x"}


async def collect(adapter: Gemini, request: ChatRequest, model: str = "m") -> list[ChatChunk]:
    return [chunk async for chunk in await adapter.open_stream(request, model)]


def text_of(chunks: list[ChatChunk], field: str = "content") -> str:
    return "".join(getattr(c.delta, field) or "" for chunk in chunks for c in chunk.choices)


def finishes(chunks: list[ChatChunk]) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


def tool_deltas(chunks: list[ChatChunk]) -> list[Any]:
    return [tc for chunk in chunks for c in chunk.choices for tc in c.delta.tool_calls or []]


def expected(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """What the recorded answers say, read independently of the adapter."""
    out: dict[str, Any] = {"text": "", "thoughts": "", "calls": [], "signature": None}
    finish = None
    for answer in answers:
        for candidate in answer.get("candidates", []):
            for part in candidate.get("content", {}).get("parts", []):
                if "functionCall" in part:
                    call = part["functionCall"]
                    out["calls"].append((call["name"], call["args"], part.get("thoughtSignature")))
                    continue
                out["signature"] = out["signature"] or part.get("thoughtSignature")
                out["thoughts" if part.get("thought") else "text"] += part.get("text", "")
            finish = candidate.get("finishReason") or finish
    reason = {"STOP": "tool_calls" if out["calls"] else "stop", "MAX_TOKENS": "length"}[finish]
    out["finish"], out["usage"] = reason, answers[-1]["usageMetadata"]
    return out


def check_usage(usage: Any, metadata: dict[str, Any]) -> None:
    thoughts = metadata.get("thoughtsTokenCount", 0)
    assert usage.prompt_tokens == metadata["promptTokenCount"]
    assert usage.completion_tokens == metadata.get("candidatesTokenCount", 0) + thoughts
    assert usage.total_tokens == metadata["totalTokenCount"]
    assert usage.reasoning_tokens == thoughts


def check_sent(request: httpx.Request, method: str) -> None:
    assert request.url.path.endswith(f":{method}")
    assert request.headers["x-goog-api-key"] == KEY
    assert KEY not in str(request.url) and "key=" not in str(request.url)
    assert request.headers["content-type"] == "application/json"


def gemini_interactions(name: str) -> list[Interaction]:
    return [ix for ix in load(name) if "googleapis.com" in ix.url or not ix.url]


# -- every recording ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [None, 7])
@pytest.mark.parametrize("name", STREAMS)
async def test_stream_recordings(name: str, chunked: int | None) -> None:
    for rec in gemini_interactions(name):
        handler = replay(rec, chunked=chunked)
        chunks = await collect(make(handler), ask(user()), "gemini-2.5-flash")
        want = expected([json.loads(data) for data in sse_data(rec.body)])

        sent = handler.requests[0]
        check_sent(sent, "streamGenerateContent")
        assert sent.url.params["alt"] == "sse"
        assert json.loads(sent.content)["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]

        assert text_of(chunks) == want["text"]
        assert text_of(chunks, "reasoning_content") == want["thoughts"]
        assert (text_of(chunks, "reasoning_signature") or None) == want["signature"]
        deltas = tool_deltas(chunks)
        assert [d.index for d in deltas] == list(range(len(want["calls"])))
        got = [
            (d.function.name, json.loads(d.function.arguments), signature_of(d.id)) for d in deltas
        ]
        assert got == [tuple(call) for call in want["calls"]]
        assert all(CALL_ID.fullmatch(d.id) and d.type == "function" for d in deltas)
        assert len({d.id for d in deltas}) == len(deltas)
        assert finishes(chunks) == [want["finish"]]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        check_usage(chunks[-1].usage, want["usage"])
        assert [c.delta.role for c in chunks[0].choices] == ["assistant"]
        assert all(c.delta.role is None for chunk in chunks[1:] for c in chunk.choices)


@pytest.mark.parametrize("name", NONSTREAMS)
async def test_nonstream_recordings(name: str) -> None:
    for rec in gemini_interactions(name):
        handler = replay(rec)
        response = await make(handler).chat(ask(user()), "gemini-2.0-flash")
        answer = json.loads(rec.body)
        want = expected([answer])
        check_sent(handler.requests[0], "generateContent")

        (choice,) = response.choices
        message = choice.message
        assert (message.content or "") == want["text"]
        calls = message.tool_calls or []
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
            (n, a) for n, a, _ in want["calls"]
        ]
        assert all(CALL_ID.fullmatch(c.id) for c in calls)
        assert choice.finish_reason == want["finish"]
        if calls:
            assert message.content is None
        assert response.model == answer["modelVersion"]
        check_usage(response.usage, want["usage"])


async def test_ids_are_stable_per_answer_and_differ_between_answers() -> None:
    name = "gemini/generateContent-nonstream-function-call.pydantic-ai.yaml"
    first, second = load(name)
    ids = []
    for rec in (first, first, second):
        response = await make(replay(rec)).chat(ask(user()), "m")
        calls = response.choices[0].message.tool_calls or []
        ids.append(calls[0].id)
    assert ids[0] == ids[1] != ids[2]
    assert response.id == "chatcmpl-" + json.loads(second.body)["responseId"]
    (rec,) = load("gemini/streamGenerateContent-sse-tool-call-roundtrip.mirascope.yaml")[:1]
    runs = [tool_deltas(await collect(make(replay(rec)), ask(user()))) for _ in range(2)]
    assert [d.id for d in runs[0]] == [d.id for d in runs[1]]


async def test_parallel_tool_call_round_trip_sends_the_recorded_contents() -> None:
    first, second = load("gemini/streamGenerateContent-sse-tool-call-roundtrip.mirascope.yaml")
    recorded = second.request_json
    tool = Tool(
        function=FunctionDef(
            name="secret_retrieval_tool",
            description="A tool that requires a password to retrieve a secret.",
            parameters={
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"password": {"title": "Password", "type": "string"}},
                "required": ["password"],
                "additionalProperties": False,
            },
            strict=True,
        )
    )
    system = Message(role="system", content="Use parallel tool calling.")
    question = user(recorded["contents"][0]["parts"][0]["text"])
    handler = replay(first, second)
    chunks = await collect(make(handler), ask(system, question, tools=[tool]))
    calls = [
        ToolCall(
            id=d.id, function=FunctionCall(name=d.function.name, arguments=d.function.arguments)
        )
        for d in tool_deltas(chunks)
    ]
    assert finishes(chunks) == ["tool_calls"] and len(calls) == 2
    assert signature_of(calls[0].id) is not None and signature_of(calls[1].id) is None
    history = [
        system,
        question,
        Message(role="assistant", tool_calls=calls),
        Message(role="tool", tool_call_id=calls[0].id, content='{"output": "Welcome to Moria!"}'),
        Message(role="tool", tool_call_id=calls[1].id, content='{"output": "Life before Death"}'),
    ]
    answer = await collect(make(handler), ask(*history, tools=[tool]))

    sent = json.loads(handler.requests[1].content)
    # the SDK that recorded this re-encoded the signature URL-safe; Gemini took it either way
    model_turn = sent["contents"][1]["parts"][0]
    model_turn["thoughtSignature"] = base64.urlsafe_b64encode(
        base64.b64decode(model_turn["thoughtSignature"])
    ).decode()
    assert sent["contents"] == recorded["contents"]
    assert sent["systemInstruction"] == {"parts": [{"text": "Use parallel tool calling."}]}
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["parameters"] == {
        "type": "object",
        "properties": {"password": {"title": "Password", "type": "string"}},
        "required": ["password"],
    }
    assert text_of(answer) == expected([json.loads(d) for d in sse_data(second.body)])["text"]


async def test_sequential_tool_turns_send_the_recorded_contents() -> None:
    interactions = load("gemini/streamGenerateContent-sse-function-call.pydantic-ai.yaml")
    handler = replay(*interactions)
    adapter = make(handler)
    history = [
        Message(role="system", content="You are a helpful chatbot."),
        user("What is the temperature of the capital of France?"),
    ]
    chunks = await collect(adapter, ask(*history))
    for turn, value in enumerate(["Paris", "30°C"]):
        (delta,) = tool_deltas(chunks)
        function = FunctionCall(name=delta.function.name, arguments=delta.function.arguments)
        call = ToolCall(id=delta.id, function=function)
        result = json.dumps({"return_value": value})
        history += [
            Message(role="assistant", content=None, tool_calls=[call]),
            Message(role="tool", tool_call_id=call.id, content=result),
        ]
        chunks = await collect(adapter, ask(*history))
        recorded = interactions[turn + 1].request_json["contents"]
        for content in recorded:
            for part in content["parts"]:
                for key in ("functionCall", "functionResponse"):
                    part.get(key, {}).pop("id", None)  # pydantic-ai's own ids
        assert json.loads(handler.requests[-1].content)["contents"] == recorded
    handler.assert_exhausted()
    assert text_of(chunks) == "The temperature in Paris is 30°C.\n"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_invalid_key_is_a_credential_failure(stream: bool) -> None:
    (rec,) = load("gemini/error-400-api-key-invalid-gzip.mirascope.yaml")
    assert rec.status == 400
    adapter = make(replay(rec, strict_path=False), name="google-ai")
    with pytest.raises(UpstreamStatusError) as info:
        if stream:
            await adapter.open_stream(ask(user()), "gemini-2.5-flash")
        else:
            await adapter.chat(ask(user()), "gemini-2.5-flash")
    exc = info.value
    assert (exc.status, exc.code, exc.retryable) == (502, "upstream_authentication_failed", True)
    assert exc.upstream_code == "API_KEY_INVALID" and exc.provider == "google-ai"
    assert "upstream 400 API_KEY_INVALID" in exc.message and "check its API key" in exc.message
    assert KEY not in exc.message and KEY not in str(exc)


async def test_model_not_found() -> None:
    (rec,) = load("gemini/error-404-model-not-found.pydantic-ai.yaml")
    with pytest.raises(UpstreamStatusError) as info:
        await make(replay(rec)).chat(ask(user()), "gemini-3.6-flahs")
    exc = info.value
    assert (exc.status, exc.code, exc.upstream_status) == (404, "model_not_found", 404)
    assert exc.message.startswith("gemini: models/gemini-3.6-flahs is not found")
    assert not exc.retryable


async def test_rate_limited_without_retry_info() -> None:
    (rec,) = load("gemini/error-429-resource-exhausted.crewai.yaml")
    with pytest.raises(UpstreamStatusError) as info:
        await make(replay(rec)).chat(ask(user()), "gemini-2.0-flash")
    exc = info.value
    assert (exc.status, exc.code, exc.retryable) == (429, "rate_limit_exceeded", True)
    assert exc.retry_after is None and "Resource exhausted" in exc.message


async def test_rate_limited_with_retry_info() -> None:
    (rec,) = load("gemini/error-429-resource-exhausted-retry-info.vercel-ai.json")
    with pytest.raises(UpstreamStatusError) as info:
        await make(replay(rec)).open_stream(ask(user()), "m")
    assert (info.value.status, info.value.retry_after) == (429, 34.4)
    handler = Serve(rec.body, 429, {"retry-after": "3"})  # a header wins over the body
    with pytest.raises(UpstreamStatusError) as info:
        await make(handler).chat(ask(user()), "m")
    assert info.value.retry_after == 3.0


async def test_key_echoed_in_an_error_is_scrubbed() -> None:
    body = {"error": {"code": 400, "message": f"bad request for {KEY}", "status": "X"}}
    with pytest.raises(UpstreamStatusError) as info:
        await make(Serve(body, 400)).chat(ask(user()), "m")
    assert KEY not in info.value.message and "****" in info.value.message
    assert info.value.status == 400


async def test_error_event_mid_stream() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    handler = Serve(sse(event({"text": "Hel"}), error))
    stream = await make(handler).open_stream(ask(user()), "m")
    seen = []
    with pytest.raises(UpstreamStatusError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert text_of(seen) == "Hel"
    assert (info.value.status, info.value.upstream_status) == (503, 503)
    assert info.value.message == "gemini: The model is overloaded."


async def test_stream_without_finish_reason_is_incomplete() -> None:
    closed: list[bool] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield sse(event({"text": "Hello"}))

        async def aclose(self) -> None:
            closed.append(True)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body())

    seen = []
    with pytest.raises(UpstreamProtocolError, match="ended before it was complete") as info:
        async for chunk in await make(handler).open_stream(ask(user()), "m"):
            seen.append(chunk)
    assert text_of(seen) == "Hello" and info.value.provider == "gemini" and closed


async def test_unreadable_event_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="unreadable") as info:
        await collect(make(Serve(b"data: <html>\r\n\r\n")), ask(user()))
    assert info.value.status == 502


async def test_no_key_is_not_configured() -> None:
    handler = Serve(b"{}")
    with pytest.raises(ProviderUnavailable, match="GEMINI_API_KEY") as info:
        await make(handler, key=None).chat(ask(user()), "m")
    assert info.value.code == "provider_not_configured" and handler.requests == []


# -- finish reasons, blocks, candidates, usage ------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "calls", "mapped"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "error"),
        ("OTHER", False, "stop"),
        ("SOMETHING_NEW", False, "stop"),
    ],
)
async def test_finish_reasons(reason: str, calls: bool, mapped: str) -> None:
    parts = [{"functionCall": {"name": "f", "args": {}}}] if calls else [{"text": "x"}]
    answer = event(*parts, finish=reason)
    response = await make(Serve(answer)).chat(ask(user()), "m")
    assert response.choices[0].finish_reason == mapped
    chunks = await collect(make(Serve(sse(answer))), ask(user()))
    assert finishes(chunks) == [mapped]


async def test_blocked_prompt_is_content_filter() -> None:
    answer = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    }
    response = await make(Serve(answer)).chat(ask(user()), "m")
    (choice,) = response.choices
    assert (choice.message.content, choice.finish_reason) == ("", "content_filter")
    chunks = await collect(make(Serve(sse(answer))), ask(user()))
    assert finishes(chunks) == ["content_filter"] and text_of(chunks) == ""
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7


async def test_several_candidates() -> None:
    first, second = event({"text": "A"}, finish="STOP"), event({"text": "B"}, index=1)
    second["candidates"][0]["finishReason"] = "MAX_TOKENS"
    answer = {**first, "candidates": first["candidates"] + second["candidates"]}
    response = await make(Serve(answer)).chat(ask(user(), n=2), "m")
    assert [(c.index, c.message.content, c.finish_reason) for c in response.choices] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]
    handler = Serve(sse(event({"text": "A"}), second, event(finish="STOP")))
    chunks = await collect(make(handler), ask(user(), n=2))
    assert handler.sent["generationConfig"] == {"candidateCount": 2}
    per_choice = [
        (c.index, c.delta.role, c.delta.content, c.finish_reason) for k in chunks for c in k.choices
    ]
    assert per_choice == [
        (0, "assistant", "A", None),
        (1, "assistant", "B", None),
        (0, None, None, "stop"),
        (1, None, None, "length"),
    ]


async def test_usage_counts_cache_tools_and_thoughts() -> None:
    answer = event({"text": "ok"}, finish="STOP")
    answer["usageMetadata"] = {
        "promptTokenCount": 100,
        "toolUsePromptTokenCount": 20,
        "cachedContentTokenCount": 64,
        "candidatesTokenCount": 5,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 155,
    }
    usage = (await make(Serve(answer)).chat(ask(user()), "m")).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 35, 155)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (64, 30)


async def test_nonstream_thoughts_and_signature() -> None:
    answer = event(
        {"text": "Let me think.", "thought": True},
        {"text": "Four.", "thoughtSignature": "c2ln"},
        finish="STOP",
    )
    message = (await make(Serve(answer)).chat(ask(user()), "m")).choices[0].message
    assert (message.content, message.reasoning_content) == ("Four.", "Let me think.")
    assert message.reasoning_signature == "c2ln"


# -- canonical -> Gemini ----------------------------------------------------------------------


async def test_signatures_go_back_where_they_came_from() -> None:
    signed = call_id("0123456789ab", 0, "ab+/cd==")
    assert signed == "call_0123456789ab_0_ts_ab-_cd" and signature_of(signed) == "ab+/cd=="
    calls = [
        ToolCall(id=signed, function=FunctionCall(name="f", arguments='{"a":1}')),
        ToolCall(id="call_0123456789ab_1", function=FunctionCall(name="f", arguments="")),
    ]
    handler = Serve(event({"text": "done"}, finish="STOP"))
    history = [
        user(),
        Message(
            role="assistant",
            content="thinking out loud",
            reasoning_signature="dGV4dA==",
            tool_calls=calls,
        ),
        Message(role="tool", tool_call_id=calls[0].id, content="plain text"),
        Message(role="tool", tool_call_id=calls[1].id, content='{"ok": true}'),
        user("thanks"),
    ]
    await make(handler).chat(ask(*history), "m")
    assert handler.sent["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "thinking out loud", "thoughtSignature": "dGV4dA=="},
                {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "ab+/cd=="},
                {"functionCall": {"name": "f", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f", "response": {"content": "plain text"}}},
                {"functionResponse": {"name": "f", "response": {"ok": True}}},
                {"text": "thanks"},
            ],
        },
    ]
    # a client that kept reasoning_signature but made up its own ids still sends it back
    other = [ToolCall(id="toolu_1", function=FunctionCall(name="g", arguments="{}"))]
    history = [user(), Message(role="assistant", reasoning_signature="c2ln", tool_calls=other)]
    await make(handler).chat(
        ask(*history, Message(role="tool", tool_call_id="toolu_1", content="1")), "m"
    )
    assert handler.sent["contents"][1]["parts"] == [
        {"functionCall": {"name": "g", "args": {}}, "thoughtSignature": "c2ln"}
    ]


async def test_roles_media_and_system() -> None:
    handler = Serve(event({"text": "ok"}, finish="STOP"))
    parts: list[ContentPart] = [
        TextPart(text="What is this?"),
        ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
        ImagePart(image_url=ImageURL(url="https://example.com/cat.webp?size=2")),
        ImagePart(image_url=ImageURL(url="https://example.com/photo")),
        AudioPart(input_audio=InputAudio(data="UklGRg==", format="wav")),
    ]
    request = ask(
        Message(role="system", content="Be terse."),
        Message(role="developer", content=[TextPart(text="No emoji.")]),
        Message(role="user", content=parts),
        Message(role="assistant", content="A cat."),
        user("Sure?"),
    )
    await make(handler).chat(request, "m")
    sent = handler.sent
    assert sent["systemInstruction"] == {"parts": [{"text": "Be terse."}, {"text": "No emoji."}]}
    assert sent["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {
                    "fileData": {
                        "mimeType": "image/webp",
                        "fileUri": "https://example.com/cat.webp?size=2",
                    }
                },
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
            ],
        },
        {"role": "model", "parts": [{"text": "A cat."}]},
        {"role": "user", "parts": [{"text": "Sure?"}]},
    ]
    assert "generationConfig" not in sent and "tools" not in sent and "toolConfig" not in sent

    # Gemini refuses empty text parts: they are left out, and so is a turn left with none
    empty: list[ContentPart] = [TextPart(text=""), TextPart(text="again")]
    request = ask(
        user(), Message(role="assistant", content=""), user(""), Message(role="user", content=empty)
    )
    await make(handler).chat(request, "m")
    assert handler.sent["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}
    ]


async def test_generation_config_and_formats() -> None:
    handler = Serve(event({"text": "{}"}, finish="STOP"))
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
    }
    request = ask(
        user(),
        temperature=0.2,
        top_p=0.9,
        max_tokens=10,
        max_completion_tokens=64,
        stop=["END"],
        n=1,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        reasoning_effort="high",
        response_format=ResponseFormat(
            type="json_schema", json_schema=JSONSchemaFormat(name="r", schema=schema, strict=True)
        ),
    )
    await make(handler).chat(request, "m")
    assert handler.sent["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "candidateCount": 1,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True},
    }
    await make(handler).chat(
        ask(user(), reasoning_effort="none", response_format=ResponseFormat(type="json_object")),
        "m",
    )
    assert handler.sent["generationConfig"] == {
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 0},
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            ToolChoice(function=ToolChoiceFunction(name="get_weather")),
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
async def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    handler = Serve(event({"text": "ok"}, finish="STOP"))
    tool = Tool(function=FunctionDef(name="get_weather", description="Weather"))
    await make(handler).chat(ask(user(), tools=[tool], tool_choice=choice), "m")
    assert handler.sent["toolConfig"] == {"functionCallingConfig": config}
    assert handler.sent["tools"] == [
        {"functionDeclarations": [{"name": "get_weather", "description": "Weather"}]}
    ]


def test_schema_cleaning() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "strict": True,
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"], "description": "unit"}},
        "properties": {
            "city": {"type": "string", "format": "uri", "default": "Oslo", "minLength": 1},
            "when": {"type": "string", "format": "date-time"},
            "unit": {"$ref": "#/$defs/Unit"},
            "days": {"type": ["integer", "null"], "format": "int32", "exclusiveMinimum": 0},
            "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "kind": {"const": "weather"},
            "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "merged": {"allOf": [{"type": "object", "properties": {"x": {"type": "boolean"}}}]},
        },
        "required": ["city"],
    }
    assert clean_schema(schema) == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "when": {"type": "string", "format": "date-time"},
            "unit": {"type": "string", "enum": ["C", "F"], "description": "unit"},
            "days": {"type": "integer", "nullable": True, "format": "int32"},
            "tags": {"type": "array", "items": {"type": "string", "nullable": True}},
            "kind": {"enum": ["weather"]},
            "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "merged": {"type": "object", "properties": {"x": {"type": "boolean"}}},
        },
        "required": ["city"],
    }
    recursive = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
    }
    with pytest.raises(InvalidRequest, match="recursive"):
        clean_schema({**recursive, "$ref": "#/$defs/Node"})


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (
            Message(
                role="assistant",
                tool_calls=[ToolCall(id="c1", function=FunctionCall(name="f", arguments="{no"))],
            ),
            "not a JSON object",
        ),
        (Message(role="tool", tool_call_id="nobody", content="x"), "unknown tool_call_id"),
        (
            Message(role="user", content=[ImagePart(image_url=ImageURL(url="file:///etc/passwd"))]),
            "data:...;base64 URL",
        ),
    ],
)
async def test_refused_before_sending(message: Message, match: str) -> None:
    handler = Serve(b"{}")
    with pytest.raises(InvalidRequest, match=match) as info:
        await make(handler).chat(ask(user(), message), "m")
    assert info.value.status == 400 and info.value.param is not None and handler.requests == []


async def test_unknown_reasoning_effort_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="reasoning_effort"):
        await make(Serve(b"{}")).chat(ask(user(), reasoning_effort="extreme"), "m")


# -- models, embeddings, relay, registry ------------------------------------------------------


async def test_list_models_follows_pages() -> None:
    pages = [
        {"models": [{"name": "models/gemini-2.5-flash"}], "nextPageToken": "p2"},
        {"models": [{"name": "models/text-embedding-004"}]},
    ]
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=pages[len(requests) - 1])

    assert await make(handler).list_models() == ["gemini-2.5-flash", "text-embedding-004"]
    assert [r.url.path for r in requests] == ["/v1beta/models", "/v1beta/models"]
    assert requests[1].url.params["pageToken"] == "p2"
    assert all(r.headers["x-goog-api-key"] == KEY and KEY not in str(r.url) for r in requests)


async def test_embed() -> None:
    handler = Serve({"embeddings": [{"values": [0.25, -0.5]}, {"values": [1.0, 0.125]}]})
    adapter = make(handler)
    request = EmbeddingRequest(model="e", input=["a", "b"], dimensions=2)
    response = await adapter.embed(request, "text-embedding-004")
    assert handler.requests[0].url.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert handler.sent == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 2,
            }
            for t in ("a", "b")
        ]
    }
    assert [item.embedding for item in response.data] == [[0.25, -0.5], [1.0, 0.125]]
    assert response.model == "text-embedding-004"
    encoded = await adapter.embed(
        EmbeddingRequest(model="e", input="a", encoding_format="base64"), "m"
    )
    raw = base64.b64decode(str(encoded.data[0].embedding))
    assert struct.unpack("<2f", raw) == (0.25, -0.5)
    with pytest.raises(InvalidRequest, match="token-array"):
        await adapter.embed(EmbeddingRequest(model="e", input=[[1, 2]]), "m")


async def test_relay_is_not_offered() -> None:
    adapter = make(Serve(b"{}"))
    assert (adapter.kind, adapter.wire) == ("gemini", "")
    assert load_adapter("gemini") is Gemini
    with pytest.raises(ProviderUnavailable, match="does not relay"):
        await adapter.relay({"model": "m"}, "m", stream=False)


def openai_compatible(handler: Handler) -> OpenAICompatible:
    config = ProviderConfig(
        name="gemini-openai",
        kind="openai-compatible",
        api_key=KEY,
        base_url="https://generativelanguage.googleapis.com/v1beta/openai",
    )
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return OpenAICompatible(config, spec=SPECS["openai-compatible"], transport=transport)


async def test_openai_compatible_endpoint_relays() -> None:
    (rec,) = load("gemini/openai-compat-chat-stream-tool-call.magentic.yaml")
    handler = replay(rec, chunked=7)
    body = rec.request_json
    relayed = await openai_compatible(handler).relay(body, "gemini-2.0-flash", stream=True)
    assert relayed.events is not None
    events = [event async for event in relayed.events]
    assert b"".join(events) == rec.body  # byte for byte, [DONE] included
    (chunk,) = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    (call,) = chunk["choices"][0]["delta"]["tool_calls"]
    assert call["id"] == "" and call["function"]["name"] == "return_bool"
    assert chunk["choices"][0]["finish_reason"] == "stop"
    assert relayed.usage is not None and relayed.usage.total_tokens == 12
    assert handler.requests[0].url.path == "/v1beta/openai/chat/completions"
    assert handler.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_openai_compatible_endpoint_translated() -> None:
    # Gemini's OpenAI endpoint sends tool-call deltas without `index`; the base numbers them
    (rec,) = load("gemini/openai-compat-chat-stream-tool-call.magentic.yaml")
    tool = Tool(function=FunctionDef(name="return_bool", parameters={"type": "object"}))
    request = ask(user("Return True."), tools=[tool], stream=True)
    stream = await openai_compatible(replay(rec)).open_stream(request, "gemini-2.0-flash")
    chunks = [chunk async for chunk in stream]
    (delta,) = tool_deltas(chunks)
    assert delta.id == "" and delta.function is not None and delta.index == 0
    assert (delta.function.name, delta.function.arguments) == ("return_bool", '{"value":true}')
    assert finishes(chunks) == ["stop"]
