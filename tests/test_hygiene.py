"""The test suite itself: it writes only into temporary folders (`tests/home_guard.py`), and
the README names every system package it needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.home_guard import REAL_HOME
from tests.servers import home_env

ROOT = Path(__file__).resolve().parent.parent

INNER = """
import os
from pathlib import Path


def test_writes_where_it_may(tmp_path):
    (Path(os.environ["HOME"]) / ".local/share/thanos").mkdir(parents=True)
    (Path(os.environ["HOME"]) / ".local/share/thanos/usage.db").write_text("fine")


def test_a_spawner_that_passes_the_real_home():
    folder = Path(os.environ["THANOS_TESTS_REAL_HOME"]) / ".local/share/thanos"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usage.db").write_text("rows")
"""


def test_the_session_runs_with_a_temporary_home() -> None:
    home = Path(os.environ["HOME"])
    assert home != Path(os.environ[REAL_HOME])
    assert home.is_relative_to(tempfile.gettempdir()) and home.name.startswith("thanos-tests-")
    assert Path.home() == home
    assert os.environ["XDG_DATA_HOME"] == str(home / ".local/share")


def inner_session(tmp_path: Path, *only: str) -> subprocess.CompletedProcess[str]:
    """pytest with only the home guard, over INNER, for a user whose HOME is `tmp_path/user`."""
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **home_env(tmp_path / "user")}
    del env["XDG_DATA_HOME"]  # the user's data under HOME/.local/share, as usual
    command = [sys.executable, "-m", "pytest", "-p", "tests.home_guard", "-p", "no:cacheprovider"]
    command += [str(tmp_path / "test_inner.py"), "-q", "-k", " or ".join(only)]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)


def test_the_guard_fails_a_session_that_wrote_into_the_real_home(tmp_path: Path) -> None:
    clean = inner_session(tmp_path, "where_it_may")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not (tmp_path / "user" / ".local/share/thanos").exists()
    dirty = inner_session(tmp_path, "real_home")
    assert dirty.returncode == 1
    assert "tests wrote outside temporary folders: 1 files changed" in dirty.stdout
    assert str(tmp_path / "user" / ".local/share/thanos/usage.db") in dirty.stdout


def test_the_readme_names_every_system_package_ci_installs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    installed = {found[1] for found in re.findall(r"apt-get install((?: -\S+)*) ([\w.+-]+)", ci)}
    assert {"redis-server", "prometheus"} <= installed
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("System packages the tests need") :].split("\n\n")[0]
    for package in installed:
        assert f"`{package}`" in paragraph
