"""Parameter validation at the front door: out-of-range values get a 400 naming the JSON path,
in the client's dialect, before anything is reserved or sent to a provider."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.helpers import KEY, client_for, gateway, sdk
from thanos_asgi import build_app

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]

PROVIDERS = f"""
[providers.openai]
api_key = "{KEY}"
base_url = "http://openai.test/v1"

[providers.anthropic]
api_key = "{KEY}"
base_url = "http://anthropic.test"

[providers.gemini]
api_key = "{KEY}"
base_url = "http://gemini.test/v1beta"

[providers.ollama]
base_url = "http://ollama.test"

[providers.local]
kind = "openai-compatible"
base_url = "http://local.test/v1"

[server]
max_output_tokens_ceiling = 5000

[routing]
max_retries = 0
"""


class Recorder:
    """Every upstream request, answered with a small valid answer in each provider's shape."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host = request.url.host
        if host == "ollama.test":
            return httpx.Response(200, json=_ollama())
        if host == "gemini.test":
            return httpx.Response(200, json=_gemini())
        if host == "anthropic.test":
            return httpx.Response(200, json=_anthropic())
        if request.url.path.endswith("/embeddings"):
            data = [{"object": "embedding", "index": 0, "embedding": [0.5]}]
            return httpx.Response(200, json={"object": "list", "data": data, "model": "e"})
        return httpx.Response(200, json=_openai())


def _openai() -> dict[str, Any]:
    message = {"role": "assistant", "content": "ok"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {"id": "c", "object": "chat.completion", "model": "m", "choices": [choice]}


def _anthropic() -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def _gemini() -> dict[str, Any]:
    candidate = {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}
    return {"candidates": [candidate], "responseId": "r"}


def _ollama() -> dict[str, Any]:
    message = {"role": "assistant", "content": "ok"}
    return {"model": "llama3", "message": message, "done": True, "done_reason": "stop"}


def setup() -> tuple[Recorder, Any]:
    upstream = Recorder()
    return upstream, build_app(gateway(upstream, PROVIDERS))


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("openai/gpt-4o-mini", {"max_tokens": -1_000_000_000}, "max_tokens"),
        ("openai/gpt-4o-mini", {"max_tokens": -5}, "max_tokens"),
        ("openai/gpt-4o-mini", {"max_completion_tokens": 0}, "max_completion_tokens"),
        ("gemini/gemini-2.5-flash", {"max_tokens": -5}, "max_tokens"),  # maxOutputTokens
        ("ollama/llama3", {"max_tokens": -5}, "max_tokens"),  # num_predict
        ("openai/gpt-4o-mini", {"n": 1000}, "n"),
        ("openai/gpt-4o-mini", {"temperature": -5}, "temperature"),
        ("openai/gpt-4o-mini", {"temperature": 2.5}, "temperature"),
        ("openai/gpt-4o-mini", {"top_p": 1.5}, "top_p"),
        ("openai/gpt-4o-mini", {"presence_penalty": 3}, "presence_penalty"),
        ("openai/gpt-4o-mini", {"frequency_penalty": -2.5}, "frequency_penalty"),
        ("openai/gpt-4o-mini", {"seed": 2**64 - 1}, "seed"),
        ("openai/gpt-4o-mini", {"seed": 2**63}, "seed"),
        ("openai/gpt-4o-mini", {"top_logprobs": 50}, "top_logprobs"),
        # beyond the catalogue's output limit (models.dev: gpt-4o-mini writes at most 16384)
        ("openai/gpt-4o-mini", {"max_tokens": 16385}, "max_tokens"),
        # a model models.dev does not know: `[server] max_output_tokens_ceiling` (5000 here)
        ("local/my-model", {"max_tokens": 5001}, "max_tokens"),
        # more choices than the provider kind gives
        ("anthropic/claude-sonnet-4-5", {"n": 2}, "n"),
        ("ollama/llama3", {"n": 2}, "n"),
        ("gemini/gemini-2.5-flash", {"n": 9}, "n"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_out_of_range_chat_parameters_are_400_and_never_sent(
    model: str, extra: dict[str, Any], param: str, stream: bool
) -> None:
    upstream, app = setup()
    body = {"model": model, "messages": HI, "stream": stream, **extra}
    async with client_for(app) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert error(response)["param"] == param
    assert f"$.{param}" in error(response)["message"]
    assert upstream.requests == []


async def test_the_official_sdk_sees_a_bad_request_naming_the_parameter() -> None:
    upstream, app = setup()
    client = sdk(app)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=-5
        )
    assert info.value.status_code == 400
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert upstream.requests == []


async def test_values_in_range_still_reach_the_provider() -> None:
    upstream, app = setup()
    body = {
        "model": "openai/gpt-4o-mini",
        "messages": HI,
        "max_tokens": 16384,
        "n": 3,
        "temperature": 2,
        "top_p": 0,
        "seed": -(2**63),
        "presence_penalty": -2,
    }
    async with client_for(app) as http:
        response = await http.post("/v1/chat/completions", json=body)
        gemini = await http.post(
            "/v1/chat/completions",
            json={"model": "gemini/gemini-2.5-flash", "messages": HI, "n": 8, "max_tokens": 10},
        )
    assert response.status_code == 200 and gemini.status_code == 200
    sent = json.loads(upstream.requests[0].content)
    assert sent["max_tokens"] == 16384 and sent["n"] == 3
    config = json.loads(upstream.requests[1].content)["generationConfig"]
    assert config["candidateCount"] == 8 and config["maxOutputTokens"] == 10


async def test_legacy_completions_are_validated_too() -> None:
    upstream, app = setup()
    body = {"model": "ollama/llama3", "prompt": "hi", "max_tokens": -5}
    async with client_for(app) as http:
        response = await http.post("/v1/completions", json=body)
    assert response.status_code == 400 and error(response)["param"] == "max_tokens"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 8193}, "max_tokens"),  # claude-3-5-haiku writes at most 8192
        ({"temperature": 1.5}, "temperature"),  # Anthropic's range is 0 .. 1
        ({"top_k": -1}, "top_k"),
    ],
)
async def test_anthropic_messages_are_validated_in_anthropic_shape(
    extra: dict[str, Any], param: str
) -> None:
    upstream, app = setup()
    client = anthropic.AsyncAnthropic(
        base_url="http://gateway.test", api_key="k", http_client=client_for(app), max_retries=0
    )
    rest = {name: value for name, value in extra.items() if name != "max_tokens"}
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(
            model="anthropic/claude-3-5-haiku-20241022",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=extra.get("max_tokens", 10),
            extra_body=rest,
        )
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert f"$.{param}" in body["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ["text", 1]}, "input"),
        ({"input": [[1, 2], "text"]}, "input"),
        ({"input": [[]]}, "input[0]"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "model": "openai/te\x00st"}, "model"),
    ],
)
async def test_embeddings_input_of_one_type(body: dict[str, Any], param: str) -> None:
    upstream, app = setup()
    async with client_for(app) as http:
        response = await http.post(
            "/v1/embeddings", json={"model": "openai/text-embedding-3-small", **body}
        )
    assert response.status_code == 400, response.text
    assert error(response)["param"] == param
    assert upstream.requests == []


async def test_a_fallback_that_cannot_honour_the_request_is_skipped() -> None:
    text = PROVIDERS.replace(
        "[routing]\nmax_retries = 0",
        '[routing]\nmax_retries = 0\nfallback_chain = ["local", "anthropic", "openai"]',
    ).replace("[providers.local]", '[providers.local]\nmodel = "my-model"\nmodels = ["my-model"]')

    def failing_local(request: httpx.Request) -> httpx.Response:
        upstream.requests.append(request)
        if request.url.host == "local.test":
            return httpx.Response(503, json={"error": {"message": "down"}})
        return httpx.Response(200, json=_openai())

    upstream = Recorder()
    app = build_app(gateway(failing_local, text))
    async with client_for(app) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "auto", "messages": HI, "n": 2}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-thanos-attempts"] == "local:503,openai:ok"  # anthropic: n = 1
