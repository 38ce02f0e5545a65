"""Gemini on Vertex AI: the recorded call, and the service-account token exchange against a
MockTransport token endpoint that checks every assertion with the key's public half."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.cassettes import load, replay
from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import ProviderUnavailable, UpstreamStatusError
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers._google_auth import SCOPE
from thanos_asgi.providers.vertex import Vertex
from thanos_asgi.types import ChatRequest, EmbeddingRequest, Message
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio

EMAIL = "gateway@thanos-test.iam.gserviceaccount.com"
TOKEN_URI = "https://oauth2.test/token"
RECORDED_URL = (
    "https://aiplatform.googleapis.com/v1beta1/projects/pydantic-ai/locations/global"
    "/publishers/google/models/gemini-2.0-flash:generateContent"
)
ANSWER = {
    "candidates": [
        {"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
}


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def pem(private_key: rsa.RSAPrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def key_file(tmp_path: Path, pem: str) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "from-key-file",
                "private_key_id": "kid-1",
                "private_key": pem,
                "client_email": EMAIL,
                "token_uri": TOKEN_URI,
            }
        )
    )
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    """Checks each assertion like Google would, then hands out numbered tokens."""

    def __init__(self, public: RSAKey, clock: Clock, *, status: int = 200, delay: float = 0):
        self.public, self.clock, self.status, self.delay = public, clock, status, delay
        self.calls = 0
        self.assertions: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        await asyncio.sleep(self.delay)
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        self.assertions.append(form["assertion"])
        token = jwt.decode(form["assertion"], self.public, algorithms=["RS256"])
        assert token.header["alg"] == "RS256" and token.header["kid"] == "kid-1"
        claims = token.claims
        assert claims["iss"] == claims["sub"] == EMAIL
        assert claims["aud"] == TOKEN_URI and claims["scope"] == SCOPE
        assert claims["iat"] == int(self.clock.now)
        assert 0 < claims["exp"] - claims["iat"] <= 3600
        if self.status != 200:
            body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            return httpx.Response(self.status, json=body)
        return httpx.Response(
            200, json={"access_token": f"ya29.token-{self.calls}", "expires_in": 3599}
        )


class Upstream:
    """Routes token requests to the token endpoint and the rest to `api`."""

    def __init__(self, tokens: TokenEndpoint, api: Any) -> None:
        self.tokens, self.api = tokens, api
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URI:
            return await self.tokens(request)
        self.requests.append(request)
        if callable(self.api):
            response: httpx.Response = self.api(request)
            return response
        return httpx.Response(200, json=self.api)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(private_key: rsa.RSAPrivateKey, clock: Clock) -> TokenEndpoint:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TokenEndpoint(RSAKey.import_key(public), clock)


def make(upstream: Any, clock: Clock | None = None, **config: Any) -> Vertex:
    settings: dict[str, Any] = {"name": "vertex", "kind": "vertex", **config}
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(upstream)))
    adapter = Vertex(ProviderConfig(**settings), spec=SPECS["vertex"], transport=transport)
    clock = clock or getattr(upstream.tokens, "clock", None)
    if clock is not None and adapter.missing_key() is None:
        adapter.token_source().clock = clock
    return adapter


def ask(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="alias", messages=[Message(role="user", content=text)])


# -- the recorded call ------------------------------------------------------------------------


async def test_recorded_vertex_call(key_file: Path, tokens: TokenEndpoint, clock: Clock) -> None:
    (rec,) = load("gemini/vertex-generateContent-nonstream.pydantic-ai.yaml")
    upstream = Upstream(tokens, replay(rec))
    adapter = make(
        upstream, clock, credentials_file=str(key_file), project="pydantic-ai", region="global"
    )
    request = ChatRequest(
        model="alias",
        messages=[
            Message(role="system", content="You are a helpful chatbot."),
            Message(role="user", content="What is the capital of France?"),
        ],
    )
    response = await adapter.chat(request, "gemini-2.0-flash")

    (sent,) = upstream.requests
    assert str(sent.url) == rec.url == RECORDED_URL
    assert sent.headers["authorization"] == "Bearer ya29.token-1"
    assert "x-goog-api-key" not in sent.headers
    recorded = rec.request_json
    body = json.loads(sent.content)
    assert body["contents"] == recorded["contents"]
    assert body["systemInstruction"]["parts"] == recorded["systemInstruction"]["parts"]
    message = response.choices[0].message
    assert message.content == "The capital of France is Paris.\n"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (13, 8)
    assert response.usage.total_tokens == 21 and response.model == "gemini-2.0-flash"
    assert tokens.calls == 1


@pytest.mark.parametrize(
    ("region", "base"),
    [
        (None, "https://us-central1-aiplatform.googleapis.com"),
        ("europe-west4", "https://europe-west4-aiplatform.googleapis.com"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com"),
    ],
)
async def test_urls_and_project_from_the_key_file(
    key_file: Path, tokens: TokenEndpoint, region: str | None, base: str
) -> None:
    upstream = Upstream(tokens, ANSWER)
    adapter = make(upstream, credentials_file=str(key_file), region=region)
    await adapter.chat(ask(), "gemini-2.5-flash")
    location = region or "us-central1"
    assert str(upstream.requests[0].url) == (
        f"{base}/v1beta1/projects/from-key-file/locations/{location}"
        "/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert adapter.status()["base_url"] == base


async def test_stream_with_base_url_override(key_file: Path, tokens: TokenEndpoint) -> None:
    event = b"data: " + json.dumps(ANSWER).encode() + b"\r\n\r\n"
    upstream = Upstream(tokens, lambda request: httpx.Response(200, content=event))
    adapter = make(upstream, credentials_file=str(key_file), base_url="http://vertex.test/")
    chunks = [c async for c in await adapter.open_stream(ask(), "gemini-2.5-pro")]
    sent = upstream.requests[0]
    assert sent.url.host == "vertex.test" and sent.url.params["alt"] == "sse"
    assert sent.url.path.endswith("/models/gemini-2.5-pro:streamGenerateContent")
    assert sent.headers["authorization"] == "Bearer ya29.token-1"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


# -- tokens -----------------------------------------------------------------------------------


async def test_token_is_cached_and_refreshed_near_expiry(
    key_file: Path, tokens: TokenEndpoint, clock: Clock
) -> None:
    upstream = Upstream(tokens, ANSWER)
    adapter = make(upstream, clock, credentials_file=str(key_file))
    for _ in range(3):
        await adapter.chat(ask(), "m")
    assert tokens.calls == 1
    clock.now += 3599 - 301  # still more than five minutes left
    await adapter.chat(ask(), "m")
    assert tokens.calls == 1
    clock.now += 2  # inside the last five minutes
    await adapter.chat(ask(), "m")
    assert tokens.calls == 2
    auth = [r.headers["authorization"] for r in upstream.requests]
    assert auth == ["Bearer ya29.token-1"] * 4 + ["Bearer ya29.token-2"]


async def test_concurrent_requests_share_one_refresh(
    key_file: Path, tokens: TokenEndpoint, clock: Clock
) -> None:
    tokens.delay = 0.02  # so every request arrives while the exchange is under way
    upstream = Upstream(tokens, ANSWER)
    adapter = make(upstream, clock, credentials_file=str(key_file))
    await asyncio.gather(*(adapter.chat(ask(), "m") for _ in range(20)))
    assert tokens.calls == 1
    clock.now += 3600  # expired
    await asyncio.gather(*(adapter.chat(ask(), "m") for _ in range(20)))
    assert tokens.calls == 2 and len(upstream.requests) == 40
    assert {r.headers["authorization"] for r in upstream.requests[20:]} == {"Bearer ya29.token-2"}


@pytest.mark.parametrize("stream", [False, True])
async def test_refused_grant_is_a_credential_failure(
    key_file: Path, tokens: TokenEndpoint, pem: str, stream: bool
) -> None:
    tokens.status = 400
    upstream = Upstream(tokens, ANSWER)
    adapter = make(upstream, credentials_file=str(key_file), name="vertex-eu")
    with pytest.raises(UpstreamStatusError) as info:
        if stream:
            await adapter.open_stream(ask(), "m")
        else:
            await adapter.chat(ask(), "m")
    exc = info.value
    assert (exc.status, exc.code, exc.retryable) == (502, "upstream_authentication_failed", True)
    assert exc.provider == "vertex-eu" and exc.upstream_code == "invalid_grant"
    assert "token endpoint answered 400: invalid_grant" in exc.message
    secret_lines = [line for line in pem.splitlines() if "PRIVATE KEY" not in line]
    text = f"{exc} {exc!r} {adapter.status()} {adapter.token_source()!r}"
    assert not any(line in text for line in secret_lines)
    assert tokens.assertions[0] not in text
    assert upstream.requests == []


async def test_token_endpoint_outage_stays_retryable(key_file: Path, tokens: TokenEndpoint) -> None:
    tokens.status = 503
    with pytest.raises(UpstreamStatusError) as info:
        await make(Upstream(tokens, ANSWER), credentials_file=str(key_file)).chat(ask(), "m")
    assert (info.value.status, info.value.retryable) == (503, True)


async def test_api_rejection_and_token_scrubbing(key_file: Path, tokens: TokenEndpoint) -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        status = 401 if "401" in request.url.path else 400
        error = {"code": status, "message": f"bad token {token}", "status": "UNAUTHENTICATED"}
        return httpx.Response(status, json={"error": error})

    adapter = make(Upstream(tokens, reject), credentials_file=str(key_file))
    with pytest.raises(UpstreamStatusError) as info:
        await adapter.chat(ask(), "model-401")
    assert (info.value.status, info.value.code) == (502, "upstream_authentication_failed")
    assert "check its credentials_file" in info.value.message
    with pytest.raises(UpstreamStatusError) as info:
        await adapter.chat(ask(), "model-400")
    assert "ya29.token-1" not in info.value.message and "****" in info.value.message


# -- configuration ----------------------------------------------------------------------------


async def test_missing_credentials(tmp_path: Path) -> None:
    upstream = Upstream(None, ANSWER)
    adapter = make(upstream, project="p")
    reason = adapter.missing_key()
    assert reason is not None and "credentials_file" in reason
    assert "GOOGLE_APPLICATION_CREDENTIALS" in reason
    assert adapter.status()["configured"] is False
    with pytest.raises(ProviderUnavailable) as info:
        await adapter.chat(ask(), "m")
    assert info.value.code == "provider_not_configured" and upstream.requests == []
    gone = make(upstream, credentials_file=str(tmp_path / "nope.json"))
    assert "does not exist" in (gone.missing_key() or "")
    with pytest.raises(ProviderUnavailable, match="does not exist"):
        await gone.chat(ask(), "m")  # no project either: the reason is still the file


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"type": "authorized_user", "client_id": "x", "refresh_token": "y"}, "service-account"),
        ({"type": "service_account", "client_email": EMAIL}, "lacks"),
        (
            {"type": "service_account", "client_email": EMAIL, "private_key": "-----BEGIN x"},
            "cannot be read",
        ),
    ],
)
async def test_unusable_key_files(tmp_path: Path, content: dict[str, str], match: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(content))
    adapter = make(Upstream(None, ANSWER), credentials_file=str(path))
    with pytest.raises(ProviderUnavailable, match=match) as info:
        await adapter.chat(ask(), "m")
    assert "BEGIN" not in info.value.message and info.value.code == "provider_not_configured"


async def test_embeddings_use_predict(key_file: Path, tokens: TokenEndpoint) -> None:
    answer = {
        "predictions": [
            {
                "embeddings": {
                    "values": [0.25, -0.5],
                    "statistics": {"token_count": 3, "truncated": False},
                }
            },
            {"embeddings": {"values": [1.0, 0.125], "statistics": {"token_count": 4.0}}},
        ]
    }
    upstream = Upstream(tokens, answer)
    adapter = make(upstream, credentials_file=str(key_file), project="p")
    response = await adapter.embed(
        EmbeddingRequest(model="e", input=["a", "b"], dimensions=2), "text-embedding-005"
    )
    sent = upstream.requests[0]
    assert sent.url.path == (
        "/v1beta1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    )
    assert json.loads(sent.content) == {
        "instances": [{"content": "a"}, {"content": "b"}],
        "parameters": {"outputDimensionality": 2},
    }
    assert [item.embedding for item in response.data] == [[0.25, -0.5], [1.0, 0.125]]
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (7, 7)
    encoded = await adapter.embed(
        EmbeddingRequest(model="e", input="a", encoding_format="base64"), "m"
    )
    assert struct.unpack("<2f", base64.b64decode(str(encoded.data[0].embedding))) == (0.25, -0.5)
    assert "parameters" not in json.loads(upstream.requests[1].content)


async def test_registry_models_and_relay(key_file: Path, tokens: TokenEndpoint) -> None:
    assert load_adapter("vertex") is Vertex and SPECS["vertex"].needs_key is False
    adapter = make(
        Upstream(tokens, ANSWER), credentials_file=str(key_file), models=["gemini-2.5-pro"]
    )
    assert (adapter.kind, adapter.wire) == ("vertex", "")
    assert await adapter.list_models() == ["gemini-2.5-pro"]
    with pytest.raises(ProviderUnavailable, match="vertex does not relay"):
        await adapter.relay({}, "m", stream=False)
    assert "PRIVATE" not in repr(adapter.token_source().account)
