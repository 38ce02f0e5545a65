"""`GET /openapi.json`: an OpenAPI 3.1 description of the public HTTP endpoints.

Request and response schemas are generated from the msgspec Structs the endpoints decode and
encode (`msgspec.json.schema_components`), so the document follows the code. Each endpoint is
one `Operation` line in `OPERATIONS`; a front-end added later adds its line there (and
`tests/test_openapi.py` fails while a served route has none). Every operation also documents
the error shape its clients get (OpenAI's, or Anthropic's under `/v1/messages`) for the
statuses the gateway answers with. The document is built once per set of served routes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from thanos_asgi.frontends._ollama_in import ChatBody, EmbedBody, GenerateBody
from thanos_asgi.frontends._responses_types import RequestBody, ResponseObject
from thanos_asgi.frontends.errors import _AnthropicBody, _OllamaBody, _OpenAIBody
from thanos_asgi.providers.anthropic_types import (
    CountTokensBody,
    MessageResponse,
    MessagesBody,
    TokenCount,
)
from thanos_asgi.types import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    ModelList,
)

PATH = "/openapi.json"
ERROR_STATUSES = (400, 401, 403, 404, 405, 413, 429, 502, 503, 504)
_REF = "#/components/schemas/{name}"


# -- bodies the endpoints build as plain dicts, described for the document ---------------------


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready", "unavailable"]
    providers: dict[str, dict[str, Any]]


class UsageReport(msgspec.Struct, kw_only=True):
    group_by: Literal["day", "provider", "model", "key"]
    data: list[dict[str, Any]]


class LoginRequest(msgspec.Struct, kw_only=True):
    provider: str | None = None
    code: str | None = None  # POST /auth/anthropic only: the `code#state` shown after approving


class LoginStarted(msgspec.Struct, kw_only=True):
    provider: str
    auth_url: str | None = None
    expires_in: int | None = None


# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter: its name and JSON schema."""

    name: str
    schema: dict[str, Any]
    where: Literal["query", "path"] = "query"


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path: what it reads, what it answers, which error shape it uses."""

    method: Literal["get", "post", "patch", "delete"]
    path: str
    summary: str
    request: Any = None  # the JSON body: a type msgspec can describe (a Struct), or None
    response: Any = None  # the JSON answer (likewise); None: a body of `media`, as text
    media: str = "application/json"
    stream: str | None = None  # the media type it answers when the body asks to stream
    dialect: Literal["openai", "anthropic", "ollama"] = "openai"
    params: tuple[Param, ...] = ()
    request_media: str = "application/json"
    extra_media: tuple[str, ...] = ()  # other media types its 200 answers may have
    ok: str = "200"  # the status of success


_OBJECT = dict[str, Any]
_SSE, _NDJSON = "text/event-stream", "application/x-ndjson"
_MODEL_ID = (Param("id", {"type": "string"}, "path"),)
_USAGE = (
    Param("group_by", {"type": "string", "enum": ["day", "provider", "model", "key"]}),
    Param("since", {"type": "number"}),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/chat/completions", "Chat", ChatRequest, ChatResponse, stream=_SSE),
    Operation("post", "/v1/chat", "Chat (alias)", ChatRequest, ChatResponse, stream=_SSE),
    Operation(
        "post", "/v1/completions", "Text", CompletionRequest, CompletionResponse, stream=_SSE
    ),
    Operation("post", "/v1/embeddings", "Embeddings", EmbeddingRequest, EmbeddingResponse),
    Operation("get", "/v1/models", "Models served", response=ModelList),
    Operation("get", "/v1/models/{id}", "One model", response=ModelInfo, params=_MODEL_ID),
    Operation(
        "post",
        "/v1/messages",
        "Messages",
        MessagesBody,
        MessageResponse,
        stream=_SSE,
        dialect="anthropic",
    ),
    Operation(
        "post",
        "/v1/messages/count_tokens",
        "Token count",
        CountTokensBody,
        TokenCount,
        dialect="anthropic",
    ),
    Operation("get", "/v1/usage", "Spend report", response=UsageReport, params=_USAGE),
    Operation("get", "/health", "Liveness", response=Health),
    Operation("get", "/health/ready", "Readiness", response=Readiness),
    Operation("get", "/metrics", "Prometheus metrics", media="text/plain"),
    Operation("post", "/auth/github", "GitHub login", LoginRequest, LoginStarted),
    Operation("post", "/auth/anthropic", "Anthropic login", LoginRequest, LoginStarted),
    Operation("get", "/auth/status", "Logins", response=dict[str, dict[str, Any]]),
    Operation("get", PATH, "This document", response=dict[str, Any]),
    Operation("post", "/v1/responses", "Responses", RequestBody, ResponseObject, stream=_SSE),
    Operation("post", "/v1/responses/input_tokens", "Input tokens", RequestBody, _OBJECT),
    Operation(
        "post", "/api/chat", "Ollama chat", ChatBody, _OBJECT, stream=_NDJSON, dialect="ollama"
    ),
    Operation(
        "post",
        "/api/generate",
        "Ollama text",
        GenerateBody,
        _OBJECT,
        stream=_NDJSON,
        dialect="ollama",
    ),
    Operation("post", "/api/embed", "Ollama embed", EmbedBody, _OBJECT, dialect="ollama"),
    Operation("post", "/api/embeddings", "Ollama embed (old)", _OBJECT, _OBJECT, dialect="ollama"),
    Operation("get", "/api/tags", "Ollama models", response=_OBJECT, dialect="ollama"),
    Operation("post", "/api/show", "Ollama model", _OBJECT, _OBJECT, dialect="ollama"),
    Operation("get", "/api/version", "Ollama version", response=_OBJECT, dialect="ollama"),
    Operation("get", "/api/ps", "Ollama running", response=_OBJECT, dialect="ollama"),
)


# -- the document -------------------------------------------------------------------------------


def document_bytes(served: Iterable[str]) -> bytes:
    """The document for the paths an app serves (`/v1/models/{id}` for its prefix route)."""
    return _document(frozenset(served))


@functools.cache
def _document(served: frozenset[str]) -> bytes:
    from thanos_asgi.frontends.admin._openapi import OPERATIONS as ADMIN  # (imports us)

    operations = [op for op in (*OPERATIONS, *ADMIN) if op.path in served]
    types = [t for op in operations for t in (op.request, op.response) if t is not None]
    types += [_OpenAIBody, _AnthropicBody, _OllamaBody]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    refs = _Refs(zip(map(_key, types), schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    document = {
        "openapi": "3.1.0",
        "info": {"title": "thanos-asgi", "version": _version()},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY},
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }
    return msgspec.json.encode(document)


class _Refs(dict[str, dict[str, Any]]):
    """Type -> its schema (a `$ref` for Structs), as `schema_components` named them."""

    def of(self, type_: Any) -> dict[str, Any]:
        return self[_key(type_)]


def _key(type_: Any) -> str:
    return repr(type_)


_SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}


def _operation(op: Operation, refs: _Refs) -> dict[str, Any]:
    spec: dict[str, Any] = {"summary": op.summary, "responses": _responses(op, refs)}
    if op.params:
        spec["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.where == "path", "schema": p.schema}
            for p in op.params
        ]
    if op.request is not None:
        body = {op.request_media: {"schema": refs.of(op.request)}}
        spec["requestBody"] = {"required": True, "content": body}
    return spec


def _responses(op: Operation, refs: _Refs) -> dict[str, Any]:
    schema = refs.of(op.response) if op.response is not None else {"type": "string"}
    content: dict[str, Any] = {op.media: {"schema": schema}}
    for media in (op.stream, *op.extra_media):
        if media:
            content[media] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {op.ok: {"description": "OK", "content": content}}
    error = {"anthropic": _AnthropicBody, "ollama": _OllamaBody}.get(op.dialect, _OpenAIBody)
    shape = {"application/json": {"schema": refs.of(error)}}
    for status in ERROR_STATUSES:
        responses[str(status)] = {"description": "Error", "content": shape}
    return responses


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("thanos-asgi")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"
