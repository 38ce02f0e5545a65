"""Google's Gemini API (generativelanguage.googleapis.com), translated to and from canonical.

No client speaks Gemini's format, so nothing is relayed. The key goes in the `x-goog-api-key`
header, never in the URL. Streams are `:streamGenerateContent?alt=sse`: every event is a whole
`GenerateContentResponse`, events end in `\\r\\n\\r\\n`, and there is no `[DONE]` - the stream
just ends, so it counts as complete once some candidate has sent a `finishReason` (or the
prompt was blocked). The mapping itself, shared with Vertex AI, lives in `_gemini_codec`
(requests, whole answers), `_gemini_schema` (tool and response schemas) and `_gemini_stream`.

Errors are `{"error": {"code", "message", "status", "details"}}`. An invalid key is a 400 whose
`ErrorInfo.reason` is `API_KEY_INVALID`: it is mapped like a 401 (the gateway's credentials,
not the client's request). A 429's `RetryInfo.retryDelay` ("34.4s") fills `retry_after` when
no Retry-After header came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import msgspec

from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers._gemini_codec import generate_body, to_response
from thanos_asgi.providers._gemini_stream import StreamDecoder
from thanos_asgi.providers.base import HTTPProvider, Relayed, embedding_base64
from thanos_asgi.providers.batches import each
from thanos_asgi.providers.gemini_types import (
    Content,
    GenerateResponse,
    Part,
    encode,
    response_decoder,
)
from thanos_asgi.sanitize import Decoder, lines_within, url_path
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
)
from thanos_asgi.upstream import UpstreamResponse
from thanos_asgi.upstream.framing import SSEBuffer, data_lines, data_of

# -- wire types: errors, models, embeddings --------------------------------------------------------


class _Detail(msgspec.Struct):
    reason: str = ""
    retry_delay: str = msgspec.field(name="retryDelay", default="")


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_Detail] = []


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


class _Model(msgspec.Struct):
    name: str


class _Models(msgspec.Struct):
    models: list[_Model] = []
    next_page_token: str = msgspec.field(name="nextPageToken", default="")


class _EmbedContent(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    model: str
    content: Content
    output_dimensionality: int | None = None


class _BatchEmbed(msgspec.Struct, kw_only=True):
    requests: list[_EmbedContent]


class _Values(msgspec.Struct):
    values: list[float] = []


class _Embeddings(msgspec.Struct):
    embeddings: list[_Values] = []


_error_body = Decoder(_ErrorBody)
_error_list = Decoder(list[_ErrorBody])
_models = Decoder(_Models)
_embeddings = Decoder(_Embeddings)
_MAX_MODEL_PAGES = 20


def google_error(body: bytes) -> _Error | None:
    """The `error` object of a Google error body (also when wrapped in a list), or None."""
    try:
        return _error_body.decode(body).error
    except msgspec.DecodeError:
        pass
    try:
        errors = _error_list.decode(body)
    except msgspec.DecodeError:
        return None
    return errors[0].error if errors else None


def _retry_delay(error: _Error) -> float | None:
    for detail in error.details:
        if detail.retry_delay.endswith("s"):
            try:
                return max(float(detail.retry_delay[:-1]), 0.0)
            except ValueError:
                continue
    return None


def embed_texts(request: EmbeddingRequest, kind: str) -> list[str]:
    try:
        return request.texts
    except TypeError:
        raise InvalidRequest(
            f"{kind} embeds text only; token-array input is not supported", param="input"
        ) from None


# -- the adapter ----------------------------------------------------------------------------------


class Gemini(HTTPProvider):
    kind: ClassVar[str] = "gemini"
    wire: ClassVar[str] = ""
    credential_hint: ClassVar[str] = "check its API key"

    def auth_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return headers

    def model_path(self, model: str, method: str) -> str:
        """The path of `model`'s `method`; a bare name means `models/<name>`."""
        name = model if "/" in model else f"models/{model}"
        return f"/{url_path(name)}:{method}"

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        raise ProviderUnavailable(f"{self.kind} does not relay")

    async def chat(self, request: ChatRequest, model: str) -> ChatResponse:
        body = encode(generate_body(request))
        response = await self.send("POST", self.model_path(model, "generateContent"), body)
        data = await self.read(response)
        answer = self._parse(data)
        response_out = to_response(answer, model, data)
        if not response_out.choices:
            raise self.tag(UpstreamProtocolError("the answer has no candidates"))
        return response_out

    async def open_stream(self, request: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return each(await self.open_batches(request, model))

    async def open_batches(
        self, request: ChatRequest, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        body = encode(generate_body(request))
        path = self.model_path(model, "streamGenerateContent") + "?alt=sse"
        response = await self.send("POST", path, body)  # refusals raise here
        return self._batches(response, model)

    async def _batches(
        self, response: UpstreamResponse, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        """The chunks of each upstream read, as one list; the finish and usage at the end."""
        decoder, events = StreamDecoder(model), SSEBuffer()
        try:
            async for data in response.iter_bytes():
                complete = events.feed(data)
                if not complete:
                    continue
                chunks, error = self._read(decoder, complete)
                if chunks:
                    yield chunks
                if error is not None:
                    try:
                        raise error
                    finally:  # (its traceback holds this frame: no cycle through `error`)
                        error = None
        except UpstreamError as exc:
            raise self.tag(exc) from exc.__cause__
        finally:
            await response.aclose()
        if not decoder.finished:
            raise self.tag(UpstreamProtocolError("the stream ended before it was complete"))
        tail = decoder.close()
        if tail:
            yield tail

    def _read(
        self, decoder: StreamDecoder, complete: bytes
    ) -> tuple[list[ChatChunk], UpstreamError | None]:
        """The chunks of the events in `complete`, then the error of an unreadable one (which
        ends the stream after what came before it)."""
        chunks: list[ChatChunk] = []
        datas = data_lines(complete)
        decode: Callable[[bytes], GenerateResponse] = response_decoder.decode
        if datas is None:
            datas = data_of(complete)
        elif lines_within(complete):  # (once a read: one-line events nest less)
            decode = response_decoder.unchecked
        for data in datas:
            if not data:
                continue
            try:
                chunks += decoder.feed(self._parse(data, decode), data)
            except UpstreamError as exc:
                return chunks, exc
        return chunks, None

    def _parse(
        self, data: bytes, decode: Callable[[bytes], GenerateResponse] = response_decoder.decode
    ) -> GenerateResponse:
        try:
            answer = decode(data)
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None
        if answer.error is not None:  # an error sent after the status line
            error = answer.error if isinstance(answer.error, dict) else {}
            code = error.get("code")
            status = code if isinstance(code, int) and code >= 400 else 500
            raise self.tag(self.error_from(status, data, {}))
        return answer

    # -- errors ------------------------------------------------------------------------------

    def error_fields(self, body: bytes) -> tuple[str, str | None, str | None, str | None]:
        error = google_error(body)
        if error is None:
            return super().error_fields(body)
        reason = next((detail.reason for detail in error.details if detail.reason), None)
        return error.message or error.status, None, reason, None

    def error_from(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamStatusError:
        error = google_error(body)
        reasons = {detail.reason for detail in error.details} if error else set()
        key_rejected = status == 400 and "API_KEY_INVALID" in reasons
        exc = super().error_from(401 if key_rejected else status, body, headers)
        if key_rejected or status in (401, 403):
            label = "API_KEY_INVALID" if key_rejected else (error.status if error else "")
            exc.message = self.scrub(
                f"provider '{self.name}' rejected the gateway's credentials "
                f"(upstream {status}{' ' + label if label else ''}); {self.credential_hint}"
            )
            exc.args = (exc.message,)
        if exc.retry_after is None and error is not None:
            exc.retry_after = _retry_delay(error)
        return exc

    # -- models and embeddings ---------------------------------------------------------------

    async def list_models(self) -> list[str]:
        names: list[str] = []
        token = ""
        for _ in range(_MAX_MODEL_PAGES):
            query = "?pageSize=1000" + (f"&pageToken={quote(token)}" if token else "")
            data = await self.read(await self.send("GET", "/models" + query))
            try:
                page = _models.decode(data)
            except msgspec.DecodeError as exc:
                raise self.tag(UpstreamProtocolError(f"unreadable model list: {exc}")) from None
            names.extend(model.name.removeprefix("models/") for model in page.models)
            token = page.next_page_token
            if not token:
                break
        return names

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResponse:
        name = model if "/" in model else f"models/{model}"
        requests = [
            _EmbedContent(
                model=name,
                content=Content(parts=[Part(text=text)]),
                output_dimensionality=request.dimensions,
            )
            for text in embed_texts(request, self.kind)
        ]
        path = self.model_path(model, "batchEmbedContents")
        response = await self.send("POST", path, encode(_BatchEmbed(requests=requests)))
        data = await self.read(response)
        try:
            vectors = [item.values for item in _embeddings.decode(data).embeddings]
        except msgspec.DecodeError as exc:
            raise self.tag(UpstreamProtocolError(f"unreadable answer: {exc}")) from None
        return embedding_response(vectors, model, request, tokens=0)


def embedding_response(
    vectors: list[list[float]], model: str, request: EmbeddingRequest, *, tokens: int
) -> EmbeddingResponse:
    """Canonical embeddings, base64-encoded when the client asked for that."""
    as_base64 = request.encoding_format == "base64"
    data = [
        Embedding(index=i, embedding=embedding_base64(vector) if as_base64 else vector)
        for i, vector in enumerate(vectors)
    ]
    response = EmbeddingResponse(data=data, model=model)
    response.usage.prompt_tokens = response.usage.total_tokens = tokens
    return response
