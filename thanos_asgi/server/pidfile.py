"""The PID file of a running `thanos serve`, and how `thanos status|stop|reload` find it.

`thanos serve` writes its process id to `<data dir>/thanos.pid` (`$XDG_DATA_HOME/thanos`, else
`~/.local/share/thanos`) or to `--pid-file`, and removes it when it exits. A file naming a
process that no longer runs is stale: it is replaced, and `status` says nothing runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PidFile", "default_pid_path", "running_pid"]


def default_pid_path(env: Mapping[str, str]) -> Path:
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(data) / "thanos" / "thanos.pid"


def running_pid(path: Path) -> int | None:
    """The process id in `path` if that process runs, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # it runs, as another user
    return pid


class PidFile:
    """Held while `thanos serve` runs: `acquire()` at start, `release()` on the way out."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self) -> int | None:
        """Write this process's id; returns the id of another running gateway instead (and
        writes nothing) when the file names one."""
        other = running_pid(self.path)
        if other is not None and other != os.getpid():
            return other
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(f"{os.getpid()}\n")
        partial.replace(self.path)
        return None

    def release(self) -> None:
        """Remove the file if it still names this process."""
        if running_pid(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)
