"""Model names to candidates, per DESIGN section 5."""

from __future__ import annotations

import pytest

from tests.helpers import config
from thanos_asgi.core.routing import Router, Target
from thanos_asgi.exceptions import ModelNotFound

CONFIG = """
[ai]
primary_provider = "claude"

[providers.ollama]
model = "llama3:8b"
models = ["mistral:7b"]

[providers.claude]
api_key = "k"
model = "claude-sonnet-4-5"

[providers.anthropic_max]
auth_method = "oauth"
model = "claude-opus-4-1"

[providers.gpt4]
api_key = "k"
model = "gpt-4o"

[providers.grok]
enabled = false

[providers.openrouter]
api_key = "k"

[routing]
fallback_chain = ["anthropic_max", "claude", "gpt4", "ollama"]
aliases = { fast = "ollama/llama3:8b", smart = "claude", loop = "loop" }
"""


@pytest.fixture
def router() -> Router:
    return Router(config(CONFIG))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ollama/llama3:8b", [Target("ollama", "llama3:8b")]),
        ("llama3:8b", [Target("ollama", "llama3:8b")]),
        ("qwen3:0.6b", [Target("ollama", "qwen3:0.6b")]),  # name:tag -> Ollama
        ("mistral:7b", [Target("ollama", "mistral:7b")]),
        ("fast", [Target("ollama", "llama3:8b")]),
        ("gpt-4o-mini", [Target("gpt4", "gpt-4o-mini")]),
        ("o3-mini", [Target("gpt4", "o3-mini")]),
        # both anthropic instances serve claude-*; fallback_chain order decides
        (
            "claude-3-5-haiku",
            [Target("anthropic_max", "claude-3-5-haiku"), Target("claude", "claude-3-5-haiku")],
        ),
        ("claude-opus-4-1", [Target("anthropic_max", "claude-opus-4-1")]),  # named in config
        ("openrouter/mistralai/mistral-small", [Target("openrouter", "mistralai/mistral-small")]),
    ],
)
def test_resolution(router: Router, name: str, expected: list[Target]) -> None:
    assert router.resolve(name) == expected


def test_auto_prefers_the_primary_provider(router: Router) -> None:
    targets = router.resolve("auto")
    assert targets[0] == Target("claude", "claude-sonnet-4-5")
    assert [t.instance for t in targets[1:]] == ["anthropic_max", "gpt4", "ollama"]


def test_aliases_and_instance_names(router: Router) -> None:
    assert router.resolve("smart") == [Target("claude", "claude-sonnet-4-5")]
    assert router.resolve("gpt4") == [Target("gpt4", "gpt-4o")]  # an instance: its model
    with pytest.raises(ModelNotFound):
        router.resolve("loop")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("grok/grok-4", "disabled"),
        ("grok-4", "not served here"),  # the only xai instance is disabled
        ("mystery", "instances: anthropic_max, claude, gpt4, ollama, openrouter"),
    ],
)
def test_unknown_models_explain_themselves(router: Router, name: str, fragment: str) -> None:
    with pytest.raises(ModelNotFound, match=fragment) as info:
        router.resolve(name)
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_configured_models_lists_models_and_aliases(router: Router) -> None:
    listed = dict(router.configured_models())
    assert listed["ollama/mistral:7b"] == "ollama"
    assert listed["fast"] == "ollama"
    assert "grok/grok-4" not in listed
