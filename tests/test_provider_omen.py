"""Omen: OpenAI-compatible forwarding with routing hints, against a MockTransport Omen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from thanos_asgi.config import ProviderConfig
from thanos_asgi.context import Context, current_context
from thanos_asgi.exceptions import UpstreamConnectError, UpstreamStatusError
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers.omen import Omen
from thanos_asgi.types import ChatRequest, Message
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio

ANSWER = {
    "id": "chatcmpl-omen1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "qwen2.5-coder:32b",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Looks good."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (
        b"data: [DONE]\n\n"
    )


def chunk(content: str | None, *, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "llama3.1:8b",
        "choices": [choice],
    }


USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
STREAM = sse(
    chunk("Hel"),
    chunk("lo"),
    chunk(None, finish="stop"),
    {**chunk(None), "choices": [], "usage": USAGE},
)


class Recorder:
    """A MockTransport handler that answers with a fixed response and keeps the requests."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "") -> None:
        self.status, self.body, self.content_type = status, body, content_type
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"content-type": self.content_type or "application/json"}
        return httpx.Response(self.status, content=self.body, headers=headers)

    @property
    def sent(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body


def make(handler: Any, **config: Any) -> Omen:
    settings = ProviderConfig(name="omen", kind="omen", **config)
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    adapter: Omen = load_adapter("omen")(settings, spec=SPECS["omen"], transport=transport)
    return adapter


@pytest.fixture
def review() -> Iterator[None]:
    token = current_context.set(Context(task="review", complexity="deep"))
    yield
    current_context.reset(token)


def client_body(stream: bool = False) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "user", "content": "review this"}],
        "temperature": 0.2,
        "stream": stream,
    }


# -- forwarding -------------------------------------------------------------------------------


async def test_nonstream_auto_forwards_hints_and_reports_the_model(review: None) -> None:
    omen = make(handler := Recorder(body=json.dumps(ANSWER).encode()))
    relayed = await omen.relay(client_body(), "auto", stream=False)
    request = handler.requests[0]
    assert str(request.url) == "http://localhost:3000/v1/chat/completions"
    assert request.headers["x-thanos-task"] == "review"
    assert request.headers["x-thanos-complexity"] == "deep"
    assert handler.sent == {
        **client_body(),
        "metadata": {"task": "review", "complexity": "deep"},
    }  # otherwise unchanged
    assert relayed.model == "qwen2.5-coder:32b"
    assert json.loads(relayed.body) == ANSWER
    assert relayed.usage is not None and relayed.usage.total_tokens == 15


async def test_stream_auto_forwards_hints_and_reports_the_first_chunks_model(
    review: None,
) -> None:
    omen = make(handler := Recorder(body=STREAM, content_type="text/event-stream"))
    relayed = await omen.relay(client_body(stream=True), "auto", stream=True)
    assert relayed.model == "llama3.1:8b"  # known before a byte goes to the client
    assert relayed.events is not None
    events = [event async for event in relayed.events]
    assert b"".join(events) == sse(chunk("Hel"), chunk("lo"), chunk(None, finish="stop"))
    assert relayed.usage is not None and relayed.usage.total_tokens == 6
    assert handler.requests[0].headers["x-thanos-task"] == "review"
    sent = handler.sent
    assert sent["metadata"] == {"task": "review", "complexity": "deep"}
    assert sent["stream_options"] == {"include_usage": True}  # for accounting, as any relay
    assert {k: v for k, v in sent.items() if k not in ("metadata", "stream_options")} == (
        client_body(stream=True)
    )


async def test_translated_chat_and_stream(review: None) -> None:
    request = ChatRequest(model="auto", messages=[Message(role="user", content="hi")])
    response = await make(Recorder(body=json.dumps(ANSWER).encode())).chat(request, "auto")
    assert response.model == "qwen2.5-coder:32b"
    assert response.choices[0].message.content == "Looks good."
    streamed = make(handler := Recorder(body=STREAM, content_type="text/event-stream"))
    chunks = [c async for c in await streamed.open_stream(request, "auto")]
    assert "".join(c.delta.content or "" for ch in chunks for c in ch.choices) == "Hello"
    assert {ch.model for ch in chunks} == {"llama3.1:8b"}
    assert handler.requests[0].headers["x-thanos-complexity"] == "deep"


async def test_defaults_without_context() -> None:
    omen = make(handler := Recorder(body=json.dumps(ANSWER).encode()))
    await omen.relay(client_body(), "auto", stream=False)
    assert handler.sent["metadata"] == {"task": "chat", "complexity": "normal"}
    assert handler.requests[0].headers["x-thanos-task"] == "chat"
    assert handler.requests[0].headers["x-thanos-complexity"] == "normal"


async def test_client_metadata_is_kept(review: None) -> None:
    omen = make(handler := Recorder(body=json.dumps(ANSWER).encode()))
    body = {**client_body(), "metadata": {"user_ref": "u-1", "task": "chat"}}
    await omen.relay(body, "auto", stream=False)
    assert handler.sent["metadata"] == {"user_ref": "u-1", "task": "review", "complexity": "deep"}


async def test_concrete_model_has_no_hints(review: None) -> None:
    omen = make(handler := Recorder(body=json.dumps(ANSWER).encode()))
    await omen.relay(client_body(), "gpt-4o", stream=False)
    assert handler.sent == {**client_body(), "model": "gpt-4o"}
    assert "x-thanos-task" not in handler.requests[0].headers


async def test_hint_headers_do_not_leak_to_other_requests(review: None) -> None:
    omen = make(handler := Recorder(body=b'{"object":"list","data":[]}'))
    await omen.relay(client_body(), "auto", stream=False)
    await omen.list_models()
    assert "x-thanos-task" not in handler.requests[-1].headers
    assert "x-thanos-task" not in omen.headers


async def test_endpoint_forms_and_key() -> None:
    for endpoint in ("http://omen.internal:3000/v1", "http://omen.internal:3000/v1/"):
        omen = make(handler := Recorder(body=json.dumps(ANSWER).encode()), base_url=endpoint)
        await omen.relay(client_body(), "auto", stream=False)
        assert str(handler.requests[0].url) == "http://omen.internal:3000/v1/chat/completions"
    omen = make(handler := Recorder(body=json.dumps(ANSWER).encode()), api_key="omen-key-12345")
    await omen.relay(client_body(), "auto", stream=False)
    assert handler.requests[0].headers["authorization"] == "Bearer omen-key-12345"
    assert omen.default_model == "auto" and omen.wire == "openai" and omen.kind == "omen"


# -- failures and models ----------------------------------------------------------------------


async def test_503_is_a_retryable_status_error() -> None:
    body = b'{"error":{"message":"all upstreams busy","type":"server_error"}}'
    omen = make(Recorder(status=503, body=body))
    with pytest.raises(UpstreamStatusError) as caught:
        await omen.relay(client_body(), "auto", stream=False)
    exc = caught.value
    assert exc.retryable and exc.upstream_status == 503 and exc.status == 503
    assert exc.provider == "omen" and "all upstreams busy" in exc.message


async def test_closing_a_stream_early() -> None:
    omen = make(Recorder(body=STREAM, content_type="text/event-stream"))
    relayed = await omen.relay(client_body(stream=True), "auto", stream=True)
    assert relayed.events is not None
    first = await anext(relayed.events)  # what one upstream read held: here, every event
    assert first.startswith(sse(chunk("Hel"))[: -len(b"data: [DONE]\n\n")])
    await relayed.events.aclose()  # type: ignore[attr-defined]
    with pytest.raises(StopAsyncIteration):
        await anext(relayed.events)


async def test_connect_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(UpstreamConnectError) as caught:
        await make(refuse).relay(client_body(), "auto", stream=False)
    assert caught.value.retryable and caught.value.provider == "omen"


async def test_error_in_first_stream_event_raises_before_returning() -> None:
    body = b'data: {"error":{"message":"no model available","code":503}}\n\n'
    omen = make(Recorder(body=body, content_type="text/event-stream"))
    with pytest.raises(UpstreamStatusError, match="no model available"):
        await omen.relay(client_body(stream=True), "auto", stream=True)


async def test_list_models() -> None:
    listing = {
        "object": "list",
        "data": [
            {"id": "auto", "object": "model"},
            {"id": "llama3.1:8b", "object": "model"},
            {"id": "gpt-4o", "object": "model"},
        ],
    }
    omen = make(handler := Recorder(body=json.dumps(listing).encode()))
    assert await omen.list_models() == ["auto", "llama3.1:8b", "gpt-4o"]
    assert str(handler.requests[0].url) == "http://localhost:3000/v1/models"
