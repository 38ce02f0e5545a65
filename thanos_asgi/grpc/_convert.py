"""Proto messages <-> canonical types: the gRPC front-end's codec, and nothing else.

Proto3 has no null, so empty strings and empty lists mean "not set" on the way in, and
`None` becomes "" or 0 on the way out.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from thanos_asgi.exceptions import InvalidRequest
from thanos_asgi.grpc import thanos_pb2 as pb
from thanos_asgi.sanitize import Decoder
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    FunctionCall,
    FunctionDef,
    Message,
    ModelInfo,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
    Usage,
)

ROLES: frozenset[str] = frozenset(("system", "developer", "user", "assistant", "tool"))
CHOICES: frozenset[str] = frozenset(("auto", "none", "required"))
_decode_json = Decoder().decode


def chat_request(proto: pb.ChatRequest) -> ChatRequest:
    """A validated canonical request; InvalidRequest (INVALID_ARGUMENT) for bad input."""
    if not proto.model:
        raise InvalidRequest("`model` must name a model", param="model")
    if not proto.messages:
        raise InvalidRequest("`messages` must contain at least one message", param="messages")
    tools = [_tool(tool, i) for i, tool in enumerate(proto.tools)] or None
    return ChatRequest(
        model=proto.model,
        messages=[_message(message, i) for i, message in enumerate(proto.messages)],
        stream=proto.stream,
        temperature=_number(proto, "temperature"),
        top_p=_number(proto, "top_p"),
        max_tokens=_max_tokens(proto),
        stop=list(proto.stop) or None,
        tools=tools,
        tool_choice=_tool_choice(proto.tool_choice, tools),
    )


def _message(proto: pb.Message, index: int) -> Message:
    if proto.role not in ROLES:
        allowed = ", ".join(sorted(ROLES))
        raise InvalidRequest(
            f"`messages[{index}].role` must be one of {allowed} (got {proto.role!r})",
            param=f"messages[{index}].role",
        )
    role: Role = proto.role  # type: ignore[assignment]  # checked against ROLES above
    calls = [
        ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments_json))
        for call in proto.tool_calls
    ]
    return Message(
        role=role,
        content=proto.content if proto.content or not calls else None,
        name=proto.name or None,
        tool_call_id=proto.tool_call_id or None,
        tool_calls=calls or None,
        reasoning_content=proto.reasoning or None,
    )


def _tool(proto: pb.Tool, index: int) -> Tool:
    param = f"tools[{index}]"
    if not proto.name:
        raise InvalidRequest(f"`{param}.name` must name the tool", param=f"{param}.name")
    parameters: dict[str, Any] | None = None
    if proto.parameters_json:
        try:
            decoded = _decode_json(proto.parameters_json)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                f"`{param}.parameters_json` is not valid JSON: {exc}",
                param=f"{param}.parameters_json",
            ) from None
        if not isinstance(decoded, dict):
            raise InvalidRequest(
                f"`{param}.parameters_json` must be a JSON object (a JSON Schema)",
                param=f"{param}.parameters_json",
            )
        parameters = decoded
    function = FunctionDef(
        name=proto.name, description=proto.description or None, parameters=parameters
    )
    return Tool(function=function)


def _tool_choice(
    choice: str, tools: list[Tool] | None
) -> Literal["none", "auto", "required"] | ToolChoice | None:
    if not choice:
        return None
    if choice in CHOICES:
        return choice  # type: ignore[return-value]  # one of the literals, checked above
    if not any(tool.function.name == choice for tool in tools or ()):
        raise InvalidRequest(
            f"`tool_choice` must be auto, none, required or the name of a tool (got {choice!r})",
            param="tool_choice",
        )
    return ToolChoice(function=ToolChoiceFunction(name=choice))


def _number(proto: pb.ChatRequest, field: Literal["temperature", "top_p"]) -> float | None:
    if not proto.HasField(field):
        return None
    value: float = getattr(proto, field)
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"`{field}` must be a number >= 0 (got {value})", param=field)
    return shortest_decimal(value)


def shortest_decimal(value: float) -> float:
    """A float32 from the wire as the shortest decimal that rounds to it: 0.7, not 0.69999999."""
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == value:
            return candidate
    return value


def _max_tokens(proto: pb.ChatRequest) -> int | None:
    if not proto.HasField("max_tokens"):
        return None
    if proto.max_tokens <= 0:
        raise InvalidRequest("`max_tokens` must be at least 1", param="max_tokens")
    return proto.max_tokens


# -- answers -------------------------------------------------------------------------------


def usage_message(usage: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


def response_message(response: ChatResponse, **common: Any) -> pb.ChatResponse:
    """The one message of a unary call: the whole answer, `done` set."""
    choice = response.choices[0] if response.choices else None
    message = choice.message if choice else None
    calls = [
        pb.ToolCall(
            index=i, id=call.id, name=call.function.name, arguments_json=call.function.arguments
        )
        for i, call in enumerate((message.tool_calls if message else None) or ())
    ]
    return pb.ChatResponse(
        content=(message.content if message else None) or "",
        reasoning=(message.reasoning_content or message.reasoning or "") if message else "",
        tool_calls=calls,
        finish_reason=(choice.finish_reason if choice else None) or "",
        usage=usage_message(response.usage) if response.usage is not None else None,
        done=True,
        **common,
    )


def chunk_message(chunk: ChatChunk, **common: Any) -> pb.ChatResponse | None:
    """One stream chunk's deltas, or None when it carries none (role-only, usage-only)."""
    if not chunk.choices:
        return None
    delta = chunk.choices[0].delta
    reasoning = delta.reasoning_content or delta.reasoning
    if not (delta.content or reasoning or delta.tool_calls):
        return None
    calls = [
        pb.ToolCall(
            index=call.index,
            id=call.id or "",
            name=(call.function.name if call.function else None) or "",
            arguments_json=(call.function.arguments if call.function else None) or "",
        )
        for call in delta.tool_calls or ()
    ]
    return pb.ChatResponse(
        content=delta.content or "", reasoning=reasoning or "", tool_calls=calls, **common
    )


def models_message(models: Iterable[ModelInfo]) -> pb.ModelsResponse:
    return pb.ModelsResponse(
        models=[pb.Model(id=model.id, owned_by=model.owned_by) for model in models]
    )


def health_message(providers: Mapping[str, Mapping[str, Any]]) -> pb.HealthResponse:
    """`Gateway.status()` as a HealthResponse; "ready" when any provider is configured."""
    ready = any(state.get("configured") for state in providers.values())
    return pb.HealthResponse(
        status="ready" if ready else "unavailable",
        providers={name: _provider_health(state) for name, state in providers.items()},
    )


def _provider_health(state: Mapping[str, Any]) -> pb.ProviderHealth:
    return pb.ProviderHealth(
        kind=str(state.get("kind") or ""),
        configured=bool(state.get("configured")),
        last_error=str(state.get("last_error") or ""),
        requests=int(state.get("requests") or 0),
        errors=int(state.get("errors") or 0),
        circuit=str(state.get("state") or ""),
    )


def oauth_provider(proto: pb.OAuthRequest) -> str:
    """The login or instance to start a login for; InvalidRequest when empty."""
    provider = proto.provider.strip()
    if not provider:
        raise InvalidRequest(
            "`provider` must name a login (copilot, anthropic) or an instance that uses one",
            param="provider",
        )
    return provider


def oauth_message(started: Mapping[str, Any]) -> pb.OAuthResponse:
    """What `initiate_oauth` answers, as an OAuthResponse (only the four public fields)."""
    return pb.OAuthResponse(
        auth_url=str(started.get("auth_url") or ""),
        user_code=str(started.get("user_code") or ""),
        state=str(started.get("state") or ""),
        expires_in=max(int(started.get("expires_in") or 0), 0),
    )
