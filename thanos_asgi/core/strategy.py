"""Ordering candidates: routing strategies, task modes and dynamic mode switching.

The Router says which targets can serve a model name; the Planner decides their order and
what to fall back to:

- an explicit `instance/model` stays first; the strategy orders whatever follows it;
- `preferred` keeps only the first candidate; every other strategy may fall back along
  `fallback_chain` (each instance with its default model) unless the request says
  `x-thanos-fallback: off`;
- `round-robin` rotates, `least-latency` sorts by the latency EWMA (errors count as slow);
- `auto` goes to Omen first under `strategy = "omen"`, else to the active mode's task table
  (`[routing.<mode>]`, by task and complexity), else to the primary provider.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from thanos_asgi.context import Context
from thanos_asgi.core.resilience import Health
from thanos_asgi.core.routing import Router, Target
from thanos_asgi.exceptions import PermissionDenied
from thanos_asgi.providers import effective_kind
from thanos_asgi.sanitize import echo

if TYPE_CHECKING:
    from thanos_asgi.config import Config, TaskRoute

SpendFraction = Callable[[], float | None]  # share of the monthly budget spent, if known
_BUDGET_RULE = re.compile(r"at_(\d+(?:\.\d+)?)_percent_budget")
_HOURS_RULE = re.compile(r"(weekday|weekend|daily)_(\d{1,2})_to_(\d{1,2})")


class Planner:
    def __init__(self, config: Config, router: Router, health: Mapping[str, Health]) -> None:
        self.config = config
        self.router = router
        self.health = health
        self.strategy = config.routing.strategy
        self.chain = [i for i in config.fallback_chain() if i in router.defaults]
        self.omen = [n for n in router.instances if _kind(config, n) == "omen"]
        self._turn = itertools.count()
        self.spend_fraction: SpendFraction = lambda: None  # set by the budgets layer

    def plan(self, model: str, ctx: Context) -> list[Target]:
        if model == "auto":
            first: list[Target] = []
            rest = self._auto(ctx)
        else:
            rest = self.router.resolve(model)
            explicit = model.startswith(f"{rest[0].instance}/")
            first = rest[:1] if explicit else []
            rest = rest[len(first) :]
        if self.strategy == "preferred" or not ctx.fallback:
            return (first + self._order(rest))[:1]
        ordered = first + self._order(rest)
        seen = {target.instance for target in ordered}
        extra = [self._default(i) for i in self.chain if i not in seen]
        return ordered + [t for t in extra if t is not None]

    def _order(self, targets: list[Target]) -> list[Target]:
        if len(targets) < 2:
            return targets
        if self.strategy == "round-robin":
            turn = next(self._turn) % len(targets)
            return targets[turn:] + targets[:turn]
        if self.strategy == "least-latency":
            return sorted(targets, key=lambda t: self.health[t.instance].latency.score())
        return targets

    def _auto(self, ctx: Context) -> list[Target]:
        targets: list[Target] = []
        if self.strategy == "omen":
            targets += [Target(name, "auto") for name in self.omen]
        table = self.task_targets(ctx)
        targets += table if table else self.router.resolve("auto")
        return _unique(targets)

    def task_targets(self, ctx: Context) -> list[Target]:
        """The active mode's choice for this task and complexity ([] without a mode table)."""
        mode = self.active_mode()
        table = self.config.routing.mode_table(mode) if mode else None
        if not table:
            return []
        route = table.get(ctx.task or "chat") or table.get("chat")
        names = _route_names(route, ctx.complexity or "normal") if route is not None else []
        return [t for t in (self._default(name) for name in names) if t is not None]

    def active_mode(self, now: dt.datetime | None = None) -> str | None:
        """`[ai] mode`, unless a `[dynamic_switching]` rule (budget first, then time) says else."""
        switching = self.config.dynamic_switching
        if switching.enabled:
            by_budget = _budget_mode(switching.rules, self.spend_fraction())
            if by_budget:
                return by_budget
            by_time = _schedule_mode(switching.schedule, now or dt.datetime.now())
            if by_time:
                return by_time
        return self.config.ai.mode

    def _default(self, instance: str) -> Target | None:
        model = self.router.defaults.get(instance)
        return Target(instance, model) if model else None


def _kind(config: Config, name: str) -> str:
    return effective_kind(name, config.providers[name].kind)


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen: set[Target] = set()
    return [t for t in targets if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]


def _route_names(route: TaskRoute, complexity: str) -> list[str]:
    if isinstance(route, str):
        return [route]
    if isinstance(route, list):
        return list(route)
    if route.provider:
        fallback = route.fallback or []
        return [route.provider, *([fallback] if isinstance(fallback, str) else fallback)]
    chosen = getattr(route, complexity, None) or route.normal or route.quick or route.deep
    if chosen is None:
        return []
    return [chosen] if isinstance(chosen, str) else list(chosen)


def _budget_mode(rules: Mapping[str, str], spent: float | None) -> str | None:
    if spent is None:
        return None
    reached = [
        (float(match.group(1)), mode)
        for key, mode in rules.items()
        if (match := _BUDGET_RULE.fullmatch(key)) and spent * 100 >= float(match.group(1))
    ]
    return max(reached)[1] if reached else None


def _schedule_mode(schedule: Mapping[str, str], now: dt.datetime) -> str | None:
    weekday = now.weekday() < 5
    for key, mode in schedule.items():
        if key == "weekend" and not weekday:
            return mode
        if key == "weekday_evening" and weekday and now.hour >= 17:
            return mode
        match = _HOURS_RULE.fullmatch(key)
        if match and _in_hours(match, now.hour, weekday):
            return mode
    return None


def _in_hours(match: re.Match[str], hour: int, weekday: bool) -> bool:
    days, start, end = match.group(1), int(match.group(2)), int(match.group(3))
    if (days == "weekday" and not weekday) or (days == "weekend" and weekday):
        return False
    if end <= start:
        end += 12  # "9_to_5" means 9:00 to 17:00
    return start <= hour < end


def permitted(targets: list[Target], requested: str, ctx: Context) -> list[Target]:
    """The targets the client's key may use. The model asked for must be allowed itself
    (PermissionDenied otherwise); fallbacks the key may not use are dropped."""
    policy = ctx.policy
    if policy is None:
        return targets
    first = targets[0]
    if not policy.allows(first.instance, requested, first.model):
        raise PermissionDenied(f"the key '{policy.key_id}' may not use the model {echo(requested)}")
    return [t for t in targets if policy.allows(t.instance, requested, t.model)]
