"""`register_kind`: a provider kind of one's own, usable in configs like the built-in ones."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from thanos_asgi import Gateway
from thanos_asgi.config import parse_config
from thanos_asgi.exceptions import ConfigError
from thanos_asgi.providers import (
    KIND_BY_NAME,
    SPECS,
    effective_kind,
    load_adapter,
    register_kind,
    unregister_kind,
)
from thanos_asgi.providers.base import HTTPProvider
from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.types import ChatRequest, Message
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio


class Mine(OpenAICompatible):
    kind = "mine"


@pytest.fixture
def mine() -> Iterator[str]:
    register_kind(
        "mine",
        Mine,
        names=("mine", "MyCorp"),
        env_keys=("MINE_API_KEY",),
        base_url="http://mine.test/v1",
        default_model="mine-1",
        model_prefixes=("mine-",),
    )
    yield "mine"
    unregister_kind("mine")


def test_a_registered_kind_loads_from_config(mine: str) -> None:
    text = '[providers.a]\nkind = "mine"\n[providers.mycorp]\nenabled = true\n'
    config = parse_config(text, source="t", env={"MINE_API_KEY": "k-123"})
    assert config.providers["a"].kind == "mine" and config.providers["mycorp"].kind == "mine"
    assert config.providers["a"].api_key == "k-123"  # from its env_keys
    assert config.providers["a"].effective_base_url == "http://mine.test/v1"
    assert SPECS["mine"].default_model == "mine-1" and KIND_BY_NAME["mycorp"] == "mine"
    assert load_adapter("mine") is Mine and effective_kind("mycorp", None) == "mine"


def test_unregistered_kinds_are_refused_again(mine: str) -> None:
    unregister_kind("mine")
    with pytest.raises(ConfigError, match="unknown kind 'mine'"):
        parse_config('[providers.a]\nkind = "mine"\n', source="t", env={})
    assert "mycorp" not in KIND_BY_NAME


def test_clashes_are_refused(mine: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind("mine", Mine)
    with pytest.raises(ValueError, match="built in"):
        register_kind("openai", Mine, replace=True)
    with pytest.raises(ValueError, match="'claude' already implies kind 'anthropic'"):
        register_kind("other", Mine, names=("claude",))
    with pytest.raises(ValueError, match="module:Class"):
        register_kind("other", "no_colon_here")
    with pytest.raises(ValueError, match="built in"):
        unregister_kind("anthropic")
    assert "other" not in SPECS
    spec = register_kind("mine", "tests.test_registry:Mine", replace=True)
    assert SPECS["mine"] is spec and load_adapter("mine") is Mine  # imported from the string


def test_specs_cannot_be_mutated_directly() -> None:
    with pytest.raises(TypeError):
        SPECS["x"] = SPECS["openai"]  # type: ignore[index]


async def test_the_gateway_routes_bare_model_names_by_the_registered_prefix(mine: str) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {
            "id": "c",
            "object": "chat.completion",
            "model": "mine-2",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "mine!"}}],
        }
        return httpx.Response(200, json=body)

    config = parse_config('[providers.corp]\nkind = "mine"\napi_key = "k"\n', source="t", env={})
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    async with Gateway(config, transport=transport) as gateway:
        assert isinstance(gateway.providers["corp"], HTTPProvider)
        request = ChatRequest(model="mine-2", messages=[Message(role="user", content="hi")])
        response = await gateway.chat(request)
    assert response.choices[0].message.content == "mine!"
    assert str(seen[0].url) == "http://mine.test/v1/chat/completions"
