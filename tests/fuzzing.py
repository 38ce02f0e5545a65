"""What the fuzz tests (`tests/test_fuzz_*.py`) share: fixed-seed Hypothesis settings, a tally
of generated inputs, and a pytest plugin that prints the tally and can require a minimum.

Every fuzz test is derandomised (the same inputs every run) and keeps no example database.
Two sizes: the default keeps `pytest` quick; `THANOS_FUZZ=ci` (the fuzz step of `.ci/run`)
runs the full budget. The CI step loads this module as a plugin:

    python -m pytest -p tests.fuzzing --fuzz-min 10000 tests/test_fuzz_*.py

and gets one summary line: inputs generated per test, statuses 500 and dropped connections.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

CI = os.environ.get("THANOS_FUZZ") == "ci"


def examples(full: int, quick: int | None = None) -> settings:
    """Fixed-seed settings: `full` examples in CI's fuzz step, `quick` (default a tenth) else."""
    count = full if CI else (quick or max(20, full // 10))
    return settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


class Tally:
    """Counts across the whole session: inputs generated, and the outcomes that must not be."""

    def __init__(self) -> None:
        self.inputs: Counter[str] = Counter()
        self.status_500 = 0
        self.dropped = 0
        self.started = time.monotonic()

    def count(self, source: str, n: int = 1) -> None:
        self.inputs[source] += n

    def line(self) -> str:
        parts = ", ".join(f"{name} {n:,}" for name, n in sorted(self.inputs.items()))
        return (
            f"fuzz: {self.total():,} generated inputs ({parts}); status 500: {self.status_500}; "
            f"connections closed without an answer: {self.dropped}; "
            f"{time.monotonic() - self.started:.0f} s"
        )

    def total(self) -> int:
        return sum(self.inputs.values())


TALLY = Tally()


# -- the plugin (`-p tests.fuzzing`) ------------------------------------------------------------


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--fuzz-min",
        type=int,
        default=0,
        help="fail the session if the fuzz tests generated fewer inputs than this",
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.inputs:
        terminalreporter.write_line(TALLY.line())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    minimum = session.config.getoption("--fuzz-min")
    if minimum and TALLY.total() < minimum and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"fuzz: only {TALLY.total():,} inputs, fewer than {minimum:,}")
