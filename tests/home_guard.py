"""Tests write only into temporary folders; this pytest plugin makes sure of it.

For the whole session HOME and the XDG base directories point into a fresh temporary folder
(so every `thanos` process a test spawns, and every default path the code derives, lands
there), and the user's own thanos folders (data, config, state, cache) are listed before and
after: if a file there appeared, changed or went away, the session fails and names it. (A
gateway of the user's own, running meanwhile, would be named too.)

`tests/conftest.py` imports its hooks; `python -m pytest -p tests.home_guard` loads it alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

REAL_HOME = "THANOS_TESTS_REAL_HOME"  # set for the session: the HOME it started with
_BASES = {  # XDG variable -> its default below HOME
    "XDG_DATA_HOME": ".local/share",
    "XDG_CONFIG_HOME": ".config",
    "XDG_STATE_HOME": ".local/state",
    "XDG_CACHE_HOME": ".cache",
}
_SAVED = pytest.StashKey[dict[str, str | None]]()
_WATCHED = pytest.StashKey[list[Path]]()
_BEFORE = pytest.StashKey[dict[str, tuple[int, int]]]()
_TEMPORARY = pytest.StashKey[Path]()


def watched(env: Mapping[str, str]) -> list[Path]:
    """The user's thanos folders, as the gateway and CLI find them in `env`."""
    home = Path(env.get("HOME") or Path.home())
    return [Path(env.get(var) or home / default) / "thanos" for var, default in _BASES.items()]


def listing(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file below `folders`: its size and modification time."""
    found: dict[str, tuple[int, int]] = {}
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            try:
                info = path.lstat()
            except FileNotFoundError:  # gone while we looked
                continue
            if not path.is_dir():
                found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


def pytest_configure(config: pytest.Config) -> None:
    folders = watched(os.environ)
    config.stash[_WATCHED] = folders
    config.stash[_BEFORE] = listing(folders)
    config.stash[_SAVED] = {name: os.environ.get(name) for name in ("HOME", REAL_HOME, *_BASES)}
    home = Path(tempfile.mkdtemp(prefix="thanos-tests-home-"))
    config.stash[_TEMPORARY] = home
    os.environ[REAL_HOME] = os.environ.get("HOME") or str(Path.home())
    os.environ["HOME"] = str(home)
    for var, default in _BASES.items():
        os.environ[var] = str(home / default)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _BEFORE not in config.stash:
        return
    before, after = config.stash[_BEFORE], listing(config.stash[_WATCHED])
    names = before.keys() | after.keys()
    changed = sorted(name for name in names if before.get(name) != after.get(name))
    for name, value in config.stash[_SAVED].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(config.stash[_TEMPORARY], ignore_errors=True)
    if changed:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"tests wrote outside temporary folders: {len(changed)} files changed", *changed]
        if reporter is not None:
            reporter.write_sep("=", "home guard", red=True)
            for line in lines:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
