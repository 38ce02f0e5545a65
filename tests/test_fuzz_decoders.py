"""Property tests for the front-end decoders: whatever a client sends (a body in the OpenAI or
Anthropic dialect, mutated or not JSON at all, or a gRPC request with any field values), the
decoder returns a canonical request or raises one of our ThanosErrors (a 4xx in the client's
own shape), never another exception (KeyError, TypeError, AttributeError, ...)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_strategies import ASCII, CHAT, JSON, MESSAGES, TEXT, mutated_json_bytes
from tests.fuzzing import TALLY, examples
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends import anthropic, openai
from thanos_asgi.grpc import _convert
from thanos_asgi.grpc import thanos_pb2 as pb
from thanos_asgi.types import ChatRequest, CompletionRequest, EmbeddingRequest

pytestmark = pytest.mark.fuzz


def decoded(source: str, decode: Any, *args: Any) -> Any:
    """`decode(*args)`, counted; a ThanosError is an answer too (None)."""
    TALLY.count(source)
    try:
        return decode(*args)
    except ThanosError as exc:
        assert 400 <= exc.status < 500, exc
        return None


@examples(1000)
@given(body=CHAT.flatmap(mutated_json_bytes))
def test_openai_chat_bodies_decode_or_are_refused(body: bytes) -> None:
    result = decoded("decoders", openai.decode_chat, body)
    if result is not None:
        raw, request = result
        assert isinstance(request, ChatRequest) and raw["model"] == request.model
        openai.wants_usage(request)


COMPLETION = st.fixed_dictionaries(
    {"model": st.just("m"), "prompt": st.one_of(TEXT, st.lists(TEXT, max_size=2))},
    optional={
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 5000),
        "suffix": TEXT,
        "echo": st.booleans(),
        "logprobs": st.integers(0, 5),
        "stop": st.one_of(TEXT, st.lists(TEXT, max_size=2)),
    },
)
EMBEDDING = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "input": st.one_of(
            TEXT,
            st.lists(TEXT, max_size=3),
            st.lists(st.integers(0, 50_000), max_size=3),
            st.lists(st.lists(st.integers(0, 50_000), max_size=3), max_size=2),
        ),
    },
    optional={"encoding_format": st.sampled_from(["float", "base64"]), "dimensions": st.integers()},
)


def _completion(body: bytes) -> ChatRequest:
    return openai.completion_to_chat(openai.convert(openai.decode_json(body), CompletionRequest))


@examples(400)
@given(body=COMPLETION.flatmap(mutated_json_bytes))
def test_legacy_completion_bodies_decode_or_are_refused(body: bytes) -> None:
    request = decoded("decoders", _completion, body)
    assert request is None or request.messages[0].role == "user"


@examples(300)
@given(body=EMBEDDING.flatmap(mutated_json_bytes))
def test_embedding_bodies_decode_or_are_refused(body: bytes) -> None:
    convert = openai.convert
    request = decoded("decoders", lambda b: convert(openai.decode_json(b), EmbeddingRequest), body)
    assert request is None or isinstance(request, EmbeddingRequest)


@examples(1000)
@given(body=MESSAGES.flatmap(mutated_json_bytes))
def test_anthropic_messages_bodies_decode_or_are_refused(body: bytes) -> None:
    result = decoded("decoders", anthropic.decode_messages, body)
    if result is not None:
        raw, request = result
        assert request.model == raw["model"] and request.messages is not None


@examples(300)
@given(value=st.binary(max_size=60) | ASCII.map(str.encode))
def test_beta_headers_are_cleaned(value: bytes) -> None:
    betas = decoded("decoders", anthropic.client_betas, value)
    assert betas is None or all(name.isprintable() for name in betas.split(","))


def _proto(fields: dict[str, Any]) -> pb.ChatRequest:
    request = pb.ChatRequest(
        model=fields["model"], stream=fields["stream"], tool_choice=fields["tool_choice"]
    )
    for message in fields["messages"]:
        calls = [pb.ToolCall(**call) for call in message.pop("tool_calls")]
        request.messages.append(pb.Message(**message, tool_calls=calls))
    for tool in fields["tools"]:
        request.tools.append(pb.Tool(**tool))
    for name in ("temperature", "top_p", "max_tokens"):
        if fields[name] is not None:
            setattr(request, name, fields[name])
    request.stop.extend(fields["stop"])
    return request


PROTO_TEXT = st.text(max_size=16).map(lambda s: s.encode("utf-8", "replace").decode("utf-8"))
PROTO = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["", "m", "openai/gpt-4o"]) | PROTO_TEXT,
        "stream": st.booleans(),
        "tool_choice": st.sampled_from(["", "auto", "none", "required", "f"]) | PROTO_TEXT,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["system", "user", "assistant", "tool", "x", ""]),
                    "content": PROTO_TEXT,
                    "tool_call_id": PROTO_TEXT,
                    "reasoning": PROTO_TEXT,
                    "tool_calls": st.lists(
                        st.fixed_dictionaries(
                            {
                                "index": st.integers(-(2**31), 2**31 - 1),
                                "id": PROTO_TEXT,
                                "name": PROTO_TEXT,
                                "arguments_json": PROTO_TEXT | JSON.map(json.dumps),
                            }
                        ),
                        max_size=2,
                    ),
                }
            ),
            max_size=3,
        ),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["", "f"]) | PROTO_TEXT,
                    "description": PROTO_TEXT,
                    "parameters_json": st.one_of(PROTO_TEXT, JSON.map(json.dumps)),
                }
            ),
            max_size=2,
        ),
        "temperature": st.none() | st.floats(width=32),
        "top_p": st.none() | st.floats(width=32),
        "max_tokens": st.none() | st.integers(-(2**31), 2**31 - 1),
        "stop": st.lists(PROTO_TEXT, max_size=3),
    }
)


@examples(500)
@given(fields=PROTO)
def test_grpc_chat_requests_convert_or_are_refused(fields: dict[str, Any]) -> None:
    request = decoded("decoders", _convert.chat_request, _proto(fields))
    if request is not None:
        assert request.model and request.messages
        assert request.max_tokens is None or request.max_tokens >= 1
