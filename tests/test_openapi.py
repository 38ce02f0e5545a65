"""`GET /openapi.json`: every route the app serves is described, with schemas generated from
the msgspec Structs the endpoints decode and encode, in a document schemathesis can load."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import schemathesis

from tests.helpers import BASIC, client_for, gateway
from tests.upstreams import FakeOpenAI
from thanos_asgi.frontends import openapi
from thanos_asgi.frontends.app import ThanosApp
from thanos_asgi.types import ChatRequest, EmbeddingRequest

pytestmark = pytest.mark.anyio


async def document(text: str = BASIC) -> tuple[ThanosApp, dict[str, Any]]:
    app = ThanosApp(gateway(FakeOpenAI(), text))
    async with client_for(app) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return app, response.json()


def served(app: ThanosApp) -> set[tuple[str, str]]:
    routes = {(path, method.lower()) for path, methods in app.routes.items() for method in methods}
    return routes | {("/v1/models/{id}", "get")}


async def test_every_served_route_is_described_and_nothing_else() -> None:
    app, doc = await document()
    assert doc["openapi"] == "3.1.0"
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert described == served(app)
    assert ("/metrics", "get") in described


async def test_a_route_turned_off_is_not_described() -> None:
    app, doc = await document(BASIC + "\n[server]\nmetrics = false\n")
    assert "/metrics" not in doc["paths"]
    assert {(p, m) for p, ops in doc["paths"].items() for m in ops} == served(app)


async def test_schemas_are_generated_from_the_structs() -> None:
    _, doc = await document()
    schemas = doc["components"]["schemas"]
    _, expected = msgspec.json.schema_components(
        [ChatRequest, EmbeddingRequest], ref_template="#/components/schemas/{name}"
    )
    assert schemas["ChatRequest"] == expected["ChatRequest"]
    assert schemas["EmbeddingRequest"] == expected["EmbeddingRequest"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatRequest"}
    ok = chat["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatResponse"}
    assert "text/event-stream" in ok


async def test_errors_are_described_in_each_dialect() -> None:
    _, doc = await document()
    paths = doc["paths"]

    def error(path: str, method: str, status: str) -> Any:
        return paths[path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert error("/v1/chat/completions", "post", "400")["$ref"].endswith("/_OpenAIBody")
    assert error("/v1/messages", "post", "400")["$ref"].endswith("/_AnthropicBody")
    assert error("/v1/messages/count_tokens", "post", "404")["$ref"].endswith("/_AnthropicBody")
    assert "500" not in paths["/v1/embeddings"]["post"]["responses"]
    openai = doc["components"]["schemas"]["_OpenAIError"]
    assert set(openai["required"]) == {"message", "type", "code", "param"}


async def test_schemathesis_reads_every_operation() -> None:
    _, doc = await document()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.path, op.method) for op in operations} == {
        (path, method) for path, ops in doc["paths"].items() for method in ops
    }


def test_the_document_is_built_once_per_set_of_routes() -> None:
    routes = ["/v1/chat/completions", "/health"]
    first = openapi.document_bytes(routes)
    assert openapi.document_bytes(reversed(routes)) is first
    assert openapi.document_bytes([*routes, "/metrics"]) is not first
