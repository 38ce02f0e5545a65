"""Bad input gets a clear error in OpenAI's shape and the right status, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.helpers import BASIC, KEY, client_for, gateway
from tests.upstreams import FakeOpenAI
from thanos_asgi import build_app
from thanos_asgi.frontends.app import ThanosApp

pytestmark = pytest.mark.anyio


def client(text: str = BASIC) -> httpx2.AsyncClient:
    return client_for(build_app(gateway(FakeOpenAI(), text)))


def error_of(response: httpx2.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    error: dict[str, object] = body["error"]
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "empty"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"messages": []}', None, "model"),
        (b'{"model": "gpt-4o", "messages": []}', "messages", "at least one"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}', None, "got `int`"),
        (b'{"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}', None, "role"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "model", "str"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            "temperature",
            "float",
        ),
    ],
)
async def test_malformed_chat_requests_are_400(
    body: bytes, param: str | None, fragment: str
) -> None:
    async with client() as http:
        response = await http.post("/v1/chat/completions", content=body)
    assert response.status_code == 400
    error = error_of(response)
    assert fragment in str(error["message"])
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


async def test_wrong_type_error_names_the_path() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text"}]}]}
    async with client() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "messages[0].content[0]" in str(error_of(response)["message"])


async def test_declared_oversize_body_is_413_before_reading() -> None:
    received = []

    async def receive() -> dict[str, object]:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    app = ThanosApp(gateway(FakeOpenAI()), max_body_bytes=1000)
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "root_path": "",
        "headers": [(b"content-length", b"5000")],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413 and received == []
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_too_large"  # type: ignore[arg-type]


async def test_streamed_oversize_body_is_413() -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 1024 * 1024

    async with client() as http:
        response = await http.post("/v1/chat/completions", content=body())
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


async def test_unknown_path_and_method() -> None:
    async with client() as http:
        missing = await http.get("/v1/nothing")
        wrong = await http.get("/v1/chat/completions")
    assert missing.status_code == 404 and error_of(missing)["type"] == "not_found_error"
    assert wrong.status_code == 405


async def test_bad_legacy_and_embedding_requests() -> None:
    async with client() as http:
        batch = await http.post("/v1/completions", json={"model": "gpt-4o", "prompt": ["a", "b"]})
        empty = await http.post("/v1/embeddings", json={"model": "gpt-4o", "input": ""})
        typed = await http.post("/v1/embeddings", json={"model": "gpt-4o", "input": {"a": 1}})
    assert batch.status_code == 400 and error_of(batch)["param"] == "prompt"
    assert empty.status_code == 400 and error_of(empty)["param"] == "input"
    assert typed.status_code == 400


async def test_provider_without_key_is_503_naming_the_variable() -> None:
    text = "[providers.openai]\nmodel = 'gpt-4o'\n"
    async with client(text) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 503
    assert "OPENAI_API_KEY" in str(error_of(response)["message"])


async def test_provider_without_login_is_503_naming_the_command() -> None:
    text = "[providers.copilot]\nmodel = 'x'\ntoken_dir = '/nonexistent/thanos-test-logins'\n"
    async with client(text) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "copilot/x", "messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 503
    error = error_of(response)
    assert "not available" in str(error["message"])
    assert "thanos auth login copilot" in str(error["message"])
    assert error["code"] == "login_required"


async def test_secrets_never_in_error_bodies() -> None:
    async with client() as http:
        for model in ("openai/fail-401", "openai/fail-403", "openai/fail-500", "openai/garbage"):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            )
            assert KEY not in response.text
            assert KEY[-8:] not in response.text
            assert response.status_code in (502, 503)


async def test_health_and_ready() -> None:
    async with client() as http:
        health = await http.get("/health")
        ready = await http.get("/health/ready")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    providers = ready.json()["providers"]
    assert providers["openai"]["configured"] is True and providers["openai"]["kind"] == "openai"
    assert KEY not in ready.text
    async with client("[providers.openai]\nmodel = 'gpt-4o'\n") as http:
        unready = await http.get("/health/ready")
    assert unready.status_code == 503 and unready.json()["status"] == "unavailable"
