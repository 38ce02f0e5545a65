"""`thanos status`, `thanos stop` and `thanos reload`: a running gateway, found by its PID file.

thanos status             # running (pid 4242, ~/.local/share/thanos/thanos.pid); exit 0, else 3
thanos reload             # SIGHUP: re-read the config (a bad file keeps the old one)
thanos stop [--wait 60]   # SIGTERM: drain, then exit; waits until the process is gone
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from thanos_asgi.server.pidfile import default_pid_path, running_pid

__all__ = ["reload", "status", "stop"]

NOT_RUNNING = 3  # the LSB exit status of `status` for a service that does not run


def _found(args: argparse.Namespace) -> tuple[Path, int | None]:
    path = Path(args.pid_file) if args.pid_file else default_pid_path(os.environ)
    return path, running_pid(path)


def status(args: argparse.Namespace) -> int:
    path, pid = _found(args)
    if pid is None:
        print(f"thanos is not running (no running process in {path})")
        return NOT_RUNNING
    print(f"thanos is running (pid {pid}, {path})")
    return 0


def reload(args: argparse.Namespace) -> int:
    path, pid = _found(args)
    if pid is None:
        print(f"thanos: not running (no running process in {path})", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGHUP)
    print(f"asked thanos (pid {pid}) to reload its config; its log says whether it did")
    return 0


def stop(args: argparse.Namespace) -> int:
    path, pid = _found(args)
    if pid is None:
        print(f"thanos: not running (no running process in {path})", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.wait
    while running_pid(path) == pid and _alive(pid):
        if time.monotonic() > deadline:
            print(f"thanos: pid {pid} still runs after {args.wait:g} s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"thanos (pid {pid}) stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def add_arguments(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The three subcommands, each with `--pid-file`."""
    for name, run, text in (
        ("status", status, "is a gateway running? (its PID file)"),
        ("stop", stop, "stop the running gateway (SIGTERM: it drains first)"),
        ("reload", reload, "make the running gateway re-read its config (SIGHUP)"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--pid-file", help="default: $XDG_DATA_HOME/thanos/thanos.pid")
        if name == "stop":
            command.add_argument("--wait", type=float, default=60.0, help="seconds (default 60)")
        command.set_defaults(run=run)
