"""The machine a benchmark runs on: what it is, what the processes on it use, how busy it was.

`environment` is the header of every script's output (machine, Python, package versions, which
gateway code ran, wrk, pinning); `OtherLoad` measures how much CPU other processes used during
a run, beside the run's own, and warns when the machine was not quiet.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from processes import ROOT

PACKAGES = ("thanos-asgi", "aiohttp", "uvicorn", "uvloop", "httptools", "msgspec")
BUSY_SHARE = 0.10  # other processes using more than this share of a core: a warning


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU time the whole machine has been busy (user, nice, system, irq, softirq), and steal."""
    fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def environment(pinned: bool, commit: str | None) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    memory = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        "?",
    )
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    wrk = shutil.which("wrk")
    wrk_version = "not installed"
    if wrk:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
        text = (done.stdout or done.stderr or "?").splitlines()[0]
        wrk_version = text.split(" Copyright")[0]  # "wrk debian/4.1.0-3+b2 [epoll]"
    tree = _git("describe", "--always", "--dirty").strip()
    changed = _git("status", "--porcelain", "--", "thanos_asgi").splitlines()
    if commit:
        code = f"commit {commit} (git archive; the work tree is not used)"
    elif tree:
        code = f"work tree at {tree}, {len(changed)} files under thanos_asgi/ differ from it"
    else:
        code = "the installed thanos_asgi (not a git checkout, or no git)"
    pinning = (
        "gateways and floor on core 1; upstreams and load generator on core 0"
        if pinned
        else "not pinned"
    )
    return "\n".join(
        [
            f"machine: {os.cpu_count()} CPUs ({cpu}), {memory} RAM, {platform.system()} "
            f"{platform.release()}",
            f"python {platform.python_version()}; {', '.join(versions)}",
            f"gateway code: {code}",
            f"wrk: {wrk_version}; pinning: {pinning}",
        ]
    )


def _git(*args: str) -> str:
    """The output of a read-only git command in the repository; "" when that fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def quietness(other: float, steal: float) -> str:
    """What other processes used (`other`) and the hypervisor stole (`steal`), in shares of a
    core, with a warning when either was more than `BUSY_SHARE`."""
    text = (
        f"CPU used by other processes during the run: {other:.0%} of a core on average "
        f"(includes kernel time for our own loopback traffic); stolen by the hypervisor: "
        f"{steal:.0%}"
    )
    if other > BUSY_SHARE or steal > BUSY_SHARE:
        text += "\nWARNING: the machine was not quiet; these figures measure contention too"
    return text


class OtherLoad:
    """How busy the rest of the machine was while we ran (`run.py`'s check): call `shares` or
    `summary` once everything started has been waited for, so its CPU time counts as ours."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.busy, self.steal = machine_cpu_seconds()
        self.own = own_cpu_seconds()

    def shares(self) -> tuple[float, float]:
        """Since `__init__`: (CPU of other processes, CPU stolen), in shares of a core."""
        busy, steal = machine_cpu_seconds()
        wall = time.monotonic() - self.began
        other = max(0.0, busy - self.busy - (own_cpu_seconds() - self.own)) / wall
        return other, (steal - self.steal) / wall

    def summary(self) -> str:
        return quietness(*self.shares())
