"""Gemini on Google Cloud Vertex AI: the Gemini adapter with Vertex URLs and OAuth2 tokens.

URL: `https://{host}/v1beta1/projects/{project}/locations/{location}/publishers/google/models/
{model}:generateContent` (`:streamGenerateContent?alt=sse`); host `aiplatform.googleapis.com`
for location `global`, `aiplatform.{us|eu}.rep.googleapis.com` for the multi-regions, else
`{location}-aiplatform.googleapis.com`; a configured `base_url` replaces `https://{host}`.
`region` is the location (default us-central1); `project` defaults to the key's `project_id`.

Auth: `Authorization: Bearer <token>`, the token from the service-account key named by
`credentials_file` (see `_google_auth`). Without one the instance is not configured:
`missing_key` says what to set. Embeddings use the `:predict` API of Vertex text-embedding
models; `list_models` answers with the models named in config (Vertex has no per-project list).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import msgspec

from thanos_asgi.exceptions import ProviderUnavailable, UpstreamError, UpstreamProtocolError
from thanos_asgi.providers._google_auth import GoogleTokens, read_service_account
from thanos_asgi.providers.gemini import Gemini, embed_texts, embedding_response
from thanos_asgi.providers.gemini_types import encode
from thanos_asgi.sanitize import Decoder, scrub, url_path
from thanos_asgi.types import EmbeddingRequest, EmbeddingResponse
from thanos_asgi.upstream import Timeouts, Transport, UpstreamResponse

if TYPE_CHECKING:
    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import ProviderSpec

DEFAULT_LOCATION = "us-central1"
TOKEN_READ_TIMEOUT = 30.0  # seconds; a token exchange is quick or broken
_MULTI_REGIONS = frozenset({"us", "eu"})


class _G(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    pass


class _Instance(_G, kw_only=True):
    content: str


class _Parameters(_G, kw_only=True):
    output_dimensionality: int | None = None


class _Predict(_G, kw_only=True):
    instances: list[_Instance]
    parameters: _Parameters | None = None


class _Statistics(msgspec.Struct):
    token_count: float = 0


class _Vector(msgspec.Struct):
    values: list[float] = []
    statistics: _Statistics | None = None


class _Prediction(msgspec.Struct):
    embeddings: _Vector


class _Predictions(msgspec.Struct):
    predictions: list[_Prediction] = []


_predictions = Decoder(_Predictions)


def vertex_host(location: str) -> str:
    if location == "global":
        return "aiplatform.googleapis.com"
    if location in _MULTI_REGIONS:
        return f"aiplatform.{location}.rep.googleapis.com"
    return f"{location}-aiplatform.googleapis.com"


class Vertex(Gemini):
    kind: ClassVar[str] = "vertex"
    credential_hint: ClassVar[str] = (
        "check its credentials_file and that the service account may use Vertex AI"
    )

    def __init__(self, config: ProviderConfig, *, spec: ProviderSpec, transport: Transport) -> None:
        super().__init__(config, spec=spec, transport=transport)
        self.location = config.region or DEFAULT_LOCATION
        if not config.base_url:
            self.base_url = f"https://{vertex_host(self.location)}"
        self.tokens: GoogleTokens | None = None  # made on first use: reading the key is I/O

    def auth_headers(self) -> dict[str, str]:
        return {"content-type": "application/json"}  # the bearer token is added per request

    def missing_key(self) -> str | None:
        path = self.config.credentials_file
        if not path:
            return (
                f"provider '{self.name}' has no Google credentials: set credentials_file to a "
                'service-account key file (credentials_file = "${GOOGLE_APPLICATION_CREDENTIALS}")'
            )
        if not Path(path).is_file():
            return f"provider '{self.name}': credentials_file {path!r} does not exist"
        return None

    def token_source(self) -> GoogleTokens:
        if self.tokens is None:
            reason = self.missing_key()
            if reason:
                raise ProviderUnavailable(reason, code="provider_not_configured")
            try:
                account = read_service_account(str(self.config.credentials_file))
            except ValueError as exc:
                raise ProviderUnavailable(
                    f"provider '{self.name}': {exc}", code="provider_not_configured"
                ) from None
            timeouts = Timeouts(connect=self.timeouts.connect, read=TOKEN_READ_TIMEOUT)
            self.tokens = GoogleTokens(
                account, self.transport, provider=self.name, timeouts=timeouts
            )
        return self.tokens

    def model_path(self, model: str, method: str) -> str:
        project = self.config.project or self.token_source().account.project_id
        if not project:
            raise ProviderUnavailable(
                f"provider '{self.name}' has no project: set project in its config",
                code="provider_not_configured",
            )
        return (
            f"/v1beta1/projects/{project}/locations/{self.location}"
            f"/publishers/google/models/{url_path(model.removeprefix('models/'))}:{method}"
        )

    async def send(
        self, method: str, path: str, body: bytes | None = None, *, timeouts: Timeouts | None = None
    ) -> UpstreamResponse:
        if self.missing_key() is None:
            try:
                token = await self.token_source().token()
            except UpstreamError as exc:
                raise self.tag(exc) from exc.__cause__
            # a new dict, never mutated: a concurrent request reads this token or another valid one
            self.headers = {**self.headers, "authorization": f"Bearer {token}"}
        return await super().send(method, path, body, timeouts=timeouts)

    def scrub(self, text: str) -> str:
        return scrub(super().scrub(text), (self.tokens.current if self.tokens else None,))

    async def list_models(self) -> list[str]:
        return list(self.models)

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        instances = [_Instance(content=text) for text in embed_texts(request, self.kind)]
        parameters = _Parameters(output_dimensionality=request.dimensions)
        body = _Predict(instances=instances, parameters=parameters if request.dimensions else None)
        response = await self.send("POST", self.model_path(model, "predict"), encode(body))
        data = await self.read(response)
        try:
            predictions = _predictions.decode(data).predictions
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None
        vectors = [item.embeddings.values for item in predictions]
        tokens = sum(
            int(item.embeddings.statistics.token_count)
            for item in predictions
            if item.embeddings.statistics
        )
        return embedding_response(vectors, model, request, tokens=tokens)
