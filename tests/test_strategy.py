"""Strategies, task tables for every seed config, and dynamic mode switching."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.helpers import config
from thanos_asgi.config import Config, load_config
from thanos_asgi.context import Context
from thanos_asgi.core.resilience import Breaker, Health
from thanos_asgi.core.routing import Router, Target
from thanos_asgi.core.strategy import Planner
from thanos_asgi.exceptions import ModelNotFound

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seed-configs"


def planner(cfg: Config) -> Planner:
    router = Router(cfg)
    health = {name: Health(Breaker()) for name in cfg.providers}
    return Planner(cfg, router, health)


def seed(name: str) -> Planner:
    return planner(load_config(SEEDS / name, env={}))


def instances(targets: list[Target]) -> list[str]:
    return [target.instance for target in targets]


@pytest.mark.parametrize(
    ("task", "complexity", "expected"),
    [
        ("completion", None, ["ollama"]),
        ("chat", None, ["ollama", "copilot"]),
        ("review", "quick", ["ollama"]),
        ("review", "normal", ["ollama", "claude"]),
        ("review", "deep", ["claude"]),
        ("review", None, ["ollama", "claude"]),
        ("refactor", None, ["ollama", "claude"]),
        ("semantic_search", None, ["ollama", "claude"]),  # provider + fallback
        ("commit_msg", None, ["ollama"]),
        ("unlisted-task", None, ["ollama", "copilot"]),  # falls back to the chat route
    ],
)
def test_complete_hybrid_task_table(task: str, complexity: str | None, expected: list[str]) -> None:
    plan = seed("complete-hybrid.toml")
    targets = plan.task_targets(Context(task=task, complexity=complexity))
    assert instances(targets) == expected
    assert targets[0].model == {
        "ollama": "codellama:13b",
        "claude": "claude-3-5-sonnet-20241022",
    }.get(targets[0].instance, targets[0].model)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("completion", ["copilot"]),
        ("chat", ["claude"]),
        ("review", ["claude", "gpt4"]),
        ("commit_msg", ["copilot"]),
        ("semantic_search", ["claude"]),
    ],
)
def test_api_heavy_task_table(task: str, expected: list[str]) -> None:
    plan = seed("api-heavy.toml")
    assert plan.active_mode() == "api-heavy"  # finds [routing.api_heavy]
    assert instances(plan.task_targets(Context(task=task))) == expected


@pytest.mark.parametrize(
    ("task", "expected"),
    [("chat", ["ollama"]), ("review", ["ollama", "claude"]), ("semantic_search", ["ollama"])],
)
def test_ollama_heavy_task_table(task: str, expected: list[str]) -> None:
    plan = seed("ollama-heavy.toml")
    assert instances(plan.task_targets(Context(task=task))) == expected
    # ollama has only `models`: its first one serves as the default
    assert plan.task_targets(Context(task=task))[0] == Target("ollama", "codellama:13b")


def test_auto_uses_the_task_table_then_the_fallback_chain() -> None:
    plan = seed("complete-hybrid.toml")  # primary_provider = "auto"
    targets = plan.plan("auto", Context(task="review", complexity="deep"))
    assert instances(targets) == ["claude", "ollama", "copilot"]


@pytest.mark.parametrize("name", ["architecture.toml", "readme-quickstart.toml"])
def test_omen_strategy_sends_auto_to_omen_first(name: str) -> None:
    plan = seed(name)
    targets = plan.plan("auto", Context())
    assert targets[0] == Target("omen", "auto")
    assert "anthropic" in instances(targets[1:])


@pytest.mark.parametrize(
    "name",
    ["cost.toml", "dynamic-switching.toml", "health.toml"],
)
def test_seed_configs_without_providers_plan_nothing(name: str) -> None:
    plan = seed(name)
    with pytest.raises(ModelNotFound, match=r"needs a provider"):
        plan.plan("auto", Context())


def test_explicit_instance_stays_first_and_chain_follows() -> None:
    plan = planner(
        config(
            """
[routing]
fallback_chain = ["b", "c"]
[providers.a]
kind = "openai-compatible"
model = "x"
[providers.b]
kind = "openai-compatible"
model = "y"
[providers.c]
kind = "openai-compatible"
model = "z"
"""
        )
    )
    assert plan.plan("a/custom", Context()) == [
        Target("a", "custom"),
        Target("b", "y"),
        Target("c", "z"),
    ]
    assert plan.plan("a/custom", Context(fallback=False)) == [Target("a", "custom")]


def three(strategy: str) -> Planner:
    return planner(
        config(
            f"""
[routing]
strategy = "{strategy}"
[providers.a]
kind = "openai-compatible"
models = ["m"]
[providers.b]
kind = "openai-compatible"
models = ["m"]
[providers.c]
kind = "openai-compatible"
models = ["m"]
"""
        )
    )


def test_round_robin_rotates() -> None:
    plan = three("round-robin")
    firsts = [plan.plan("m", Context())[0].instance for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_least_latency_prefers_the_fastest_and_penalises_errors() -> None:
    plan = three("least-latency")
    plan.health["a"].latency.observe(300, ok=True)
    plan.health["b"].latency.observe(50, ok=True)
    plan.health["c"].latency.observe(10, ok=False)  # an error counts as slow
    assert instances(plan.plan("m", Context())) == ["b", "a", "c"]


def test_preferred_keeps_only_the_first() -> None:
    assert instances(three("preferred").plan("m", Context())) == ["a"]


DYNAMIC = """
[ai]
mode = "hybrid"
[dynamic_switching]
enabled = true
[dynamic_switching.rules]
at_50_percent_budget = "hybrid"
at_80_percent_budget = "ollama-heavy"
at_95_percent_budget = "ollama-only"
[dynamic_switching.schedule]
weekday_9_to_5 = "api-heavy"
weekday_evening = "hybrid-evening"
weekend = "ollama-heavy"
"""


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (dt.datetime(2026, 11, 23, 10, 0), "api-heavy"),  # Monday morning
        (dt.datetime(2026, 11, 23, 16, 59), "api-heavy"),
        (dt.datetime(2026, 11, 23, 19, 0), "hybrid-evening"),
        (dt.datetime(2026, 11, 28, 12, 0), "ollama-heavy"),  # Saturday
        (dt.datetime(2026, 11, 24, 7, 0), "hybrid"),  # no rule: [ai] mode
    ],
)
def test_schedule_switching(when: dt.datetime, expected: str) -> None:
    assert planner(config(DYNAMIC)).active_mode(when) == expected


@pytest.mark.parametrize(
    ("spent", "expected"),
    [(0.2, "api-heavy"), (0.5, "hybrid"), (0.85, "ollama-heavy"), (0.99, "ollama-only")],
)
def test_budget_switching_hook(spent: float, expected: str) -> None:
    plan = planner(config(DYNAMIC))
    plan.spend_fraction = lambda: spent
    assert plan.active_mode(dt.datetime(2026, 11, 23, 10, 0)) == expected
