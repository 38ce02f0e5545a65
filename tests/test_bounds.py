"""Client and provider strings are bounded: model-name form, URL paths, response headers,
metrics labels, echoed text and ledger rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from tests.helpers import BASIC, KEY, client_for, config, gateway
from tests.servers import running
from tests.upstreams import SSE, FakeOpenAI, completion, stream_body
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.frontends.asgi import Message
from thanos_asgi.governance.ledger import Ledger

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]
GEMINI = f"""
[providers.gemini]
api_key = "{KEY}"
base_url = "http://gemini.test/v1beta"

[routing]
max_retries = 0
"""


def error_message(response: Any) -> str:
    return str(response.json()["error"]["message"])


# -- model names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "openai/gpt-4o\x00",
        "openai/gpt\r\nx-injected: 1",
        "openai/" + "x" * 250,  # 257 bytes
        "openai/" + "é" * 125,  # 257 bytes of UTF-8
        "x" * 2_000_000,
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"])
async def test_bad_model_names_are_400_before_any_provider_call(model: str, path: str) -> None:
    upstream = FakeOpenAI()
    body = {"model": model, "messages": HI, "input": "x", "max_tokens": 5, "stream": True}
    async with client_for(build_app(gateway(upstream, BASIC))) as http:
        response = await http.post(path, json=body)
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 1000  # the name is quoted, at most a few dozen characters
    assert upstream.requests == []


async def test_a_control_character_in_a_streamed_model_name_gets_an_answer_over_uvicorn() -> None:
    upstream = FakeOpenAI()
    app = build_app(gateway(upstream, BASIC))
    async with running(app) as url, httpx2.AsyncClient(base_url=url) as http:
        body = {"model": "openai/gpt-4o\x1b", "messages": HI, "stream": True}
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert upstream.requests == []


async def test_a_providers_model_with_control_characters_is_sanitised_in_headers() -> None:
    bad = "gpt-4o\r\nset-cookie: x=1\x00é"

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            return httpx.Response(200, content=stream_body(bad, "hi there", True), headers=SSE)
        return httpx.Response(200, json=completion(bad, "hi"))

    app = build_app(gateway(answer, BASIC))
    async with running(app) as url, httpx2.AsyncClient(base_url=url) as http:
        whole = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HI})
        stream = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": HI, "stream": True}
        )
        messages = await http.post(
            "/v1/messages", json={"model": "gpt-4o", "messages": HI, "max_tokens": 5}
        )
    for response in (whole, stream, messages):
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    assert whole.headers["x-thanos-model"] == "gpt-4o%0D%0Aset-cookie: x=1%00%C3%A9"
    assert whole.json()["model"] == bad  # the body carries it JSON-escaped, as sent


async def test_gemini_model_names_cannot_leave_the_models_path() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        parts = [{"text": "ok"}]
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
        return httpx.Response(200, json={"candidates": [candidate]})

    async with client_for(build_app(gateway(answer, GEMINI))) as http:
        escape = await http.post(
            "/v1/chat/completions", json={"model": "gemini/../../x", "messages": HI}
        )
        dotted = await http.post(
            "/v1/chat/completions", json={"model": "gemini/models/./x", "messages": HI}
        )
        assert escape.status_code == 400 and dotted.status_code == 400
        assert seen == []
        odd = await http.post(
            "/v1/chat/completions", json={"model": "gemini/gemini x?key=1#f", "messages": HI}
        )
    assert odd.status_code == 200
    assert seen[0].url.raw_path == b"/v1beta/models/gemini%20x%3Fkey%3D1%23f:generateContent"


async def test_an_unknown_model_is_echoed_at_most_200_characters() -> None:
    name = "q" * 250
    async with client_for(build_app(gateway(FakeOpenAI(), BASIC))) as http:
        missing = await http.post("/v1/chat/completions", json={"model": name, "messages": HI})
        info = await http.get("/v1/models/" + "m" * 5000)
    assert missing.status_code == 404
    assert "q" * 200 in error_message(missing) and "q" * 201 not in error_message(missing)
    assert info.status_code == 400 and len(info.content) < 1000


# -- cardinality ---------------------------------------------------------------------------------


class Answer:
    """A whole JSON answer, as an upstream transport hands it over."""

    status = 200
    headers = {"content-type": "application/json"}

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self) -> bytes:
        return self.body

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        yield self.body

    async def aclose(self) -> None:
        return None


class Echo:
    """A transport answering every chat or embeddings request at once, naming its model."""

    async def send(
        self, method: str, url: str, *, headers: Any, body: bytes | None = None, timeouts: Any
    ) -> Answer:
        request = json.loads(body or b"{}")
        if url.endswith("/embeddings"):
            data = [{"object": "embedding", "index": 0, "embedding": [0.5]}]
            answer = {"object": "list", "data": data, "model": request["model"]}
            return Answer(json.dumps(answer).encode())
        return Answer(json.dumps(completion(request["model"], "hi")).encode())

    async def aclose(self) -> None:
        return None


async def post(app: Any, path: str, body: dict[str, Any]) -> int:
    """One request straight into the ASGI app (no HTTP client: 10,000 of them stay quick)."""
    data = json.dumps(body).encode()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_metrics_stay_small_after_10000_distinct_unknown_models() -> None:
    app = build_app(Gateway(config(BASIC), transport=Echo()))  # type: ignore[arg-type]
    for index in range(10_000):
        model = f"openai/unknown-{index:05d}-" + "z" * 200
        if index % 2:
            status = await post(app, "/v1/embeddings", {"model": model, "input": "x"})
        else:
            status = await post(app, "/v1/chat/completions", {"model": model, "messages": HI})
        assert status == 200
    assert (
        await post(app, "/v1/chat/completions", {"model": "openai/gpt-4o", "messages": HI}) == 200
    )
    async with client_for(app) as http:
        metrics = (await http.get("/metrics")).text
    assert len(metrics.encode()) < 1024 * 1024
    assert "unknown-" not in metrics
    assert 'thanos_requests_total{model="other",provider="openai",status="ok"} 10000.0' in metrics
    assert 'model="gpt-4o"' in metrics  # a catalogue model keeps its own label


async def test_ledger_rows_bound_a_providers_model_name(tmp_path: Path) -> None:
    def long_model(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion("m" * 100_000, "hi"))

    ledger = Ledger(tmp_path / "ledger.db")
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(long_model)))
    gw = Gateway(config(BASIC), transport=transport, ledger=ledger)
    async with client_for(build_app(gw)) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": HI}
        )
        assert response.status_code == 200
        assert len(response.headers["x-thanos-model"]) <= 256
    rows = list(ledger.rows())
    assert rows and all(len(row.model) <= 256 for row in rows)
    ledger.close()
