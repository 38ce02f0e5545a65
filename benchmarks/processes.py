"""Starting, reaching and stopping the processes a benchmark measures.

Each process runs in its own process group, on a free 127.0.0.1 port, its output in a log in
the run's working directory; `Bench.stop` ends every one, also on Ctrl-C or SIGTERM
(`terminate_on_sigterm`). `run.py`, `streams.py`, `memory.py`, `vs_litellm.py` and
`workers.py` all start their processes with these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from targets import GATEWAY_CONFIG

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int


@dataclass
class Bench:
    """Everything running, and where to reach it."""

    workdir: Path
    pinned: bool
    chunks: int
    processes: list[Process] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def cpu(self, core: int) -> list[str]:
        return ["taskset", "-c", str(core)] if self.pinned else []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        core: int,
        port: int,
        env: dict[str, str] | None = None,
    ) -> Process:
        log = self.workdir / f"{name}.log"
        env = dict(os.environ if env is None else env)
        env.setdefault("XDG_DATA_HOME", str(self.workdir / f"{name}-data"))  # never ~/.local
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [*self.cpu(core), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as one
                cwd=self.workdir,
                env=env,
            )
        process = Process(name, popen, log, port)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.processes:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(5)

    def pid(self, name: str) -> int:
        return next(p.popen.pid for p in self.processes if p.name == name)

    def load(self, command: str, url: str, *options: str, timeout: float = 120) -> dict[str, Any]:
        argv = [*self.cpu(0), PYTHON, str(HERE / "load.py"), command, "--url", url, *options]
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so wrk, its child, goes with it if we stop early
        ) as popen:
            try:
                out, err = popen.communicate(timeout=timeout)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                raise
        if popen.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{out}\n{err}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(process: Process, timeout: float = 30) -> None:
    """Until the port accepts connections (uvicorn binds after startup); fail if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited ({process.popen.returncode}):\n{tail(process)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", process.port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} not ready after {timeout} s:\n{tail(process)}")


def tail(process: Process, lines: int = 30) -> str:
    text = process.log.read_text(errors="replace") if process.log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def thanos_command() -> list[str]:
    script = Path(PYTHON).parent / "thanos"
    return [str(script)] if script.exists() else [PYTHON, "-m", "thanos_asgi.cli"]


def snapshot(commit: str, into: Path) -> str:
    """`thanos_asgi` as of `commit`, extracted under `into`; returns the commit's short hash."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "thanos_asgi"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, timeout=60, check=True)
    rev = ["git", "-C", str(ROOT), "rev-parse", "--short", commit]
    return subprocess.run(
        rev, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `finally` that stops the processes runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_targets(
    bench: Bench, source: Path | None, upstreams: dict[str, float], floors: tuple[str, ...]
) -> dict[str, str]:
    """`streams.py`'s and `memory.py`'s processes: upstreams (name -> ms between events), a
    floor in front of each of `floors`, and one gateway routing `bench-model` to the first
    upstream and `paced-model` to the last. Returns the chat URL of every target: the
    upstream's name, `floor-<name>`, `gateway`."""
    path = "/v1/chat/completions"
    urls: dict[str, str] = {}
    started = []
    ports: dict[str, int] = {}
    for name, delay in upstreams.items():
        port = ports[name] = free_port()
        argv = [PYTHON, str(HERE / "upstream.py"), "--chunks", str(bench.chunks)]
        argv += ["--port", str(port), "--delay-ms", str(delay)]
        started.append(bench.start(name, argv, 0, port))
        urls[name] = f"http://127.0.0.1:{port}{path}"
    for name in floors:
        port = free_port()
        argv = [PYTHON, str(HERE / "floor.py"), "--port", str(port)]
        argv += ["--upstream", f"http://127.0.0.1:{ports[name]}/v1"]
        started.append(bench.start(f"floor-{name}", argv, 1, port))
        urls[f"floor-{name}"] = f"http://127.0.0.1:{port}{path}"
    port = free_port()
    config = bench.workdir / "thanos.toml"
    first, last = ports[next(iter(upstreams))], ports[list(upstreams)[-1]]
    config.write_text(GATEWAY_CONFIG.format(port=port, fast=first, paced=last))
    serve = [*thanos_command(), "serve", "--config", str(config)]
    serve += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = None
    if source is not None:  # the snapshot comes first on sys.path, before the installed package
        path_now = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), path_now]))}
    started.append(bench.start("gateway", serve, 1, port, env))
    for process in started:
        wait_ready(process)
    urls["gateway"] = f"http://127.0.0.1:{port}{path}"
    return urls


@dataclass
class Run:
    """What `run_on_targets` saw: the machine facts, the results, who died, the gateway's log."""

    facts: str
    results: dict[str, Any]
    died: list[str]
    logged: str


def run_on_targets(
    args: Any,
    prefix: str,
    upstreams: dict[str, float],
    floors: tuple[str, ...],
    measure: Callable[[Bench, dict[str, str], Any], Awaitable[dict[str, Any]]],
) -> Run | None:
    """Start `start_targets`' processes (from `args.commit` if given), run `measure` against
    them from core 0, stop them all; None (said on stderr) if starting or measuring failed."""
    import tempfile

    import uvloop
    from machine import environment

    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, terminate_on_sigterm():
        bench = Bench(Path(tmp), pinned, args.chunks)
        source = Path(tmp) / "src" if args.commit else None
        try:
            commit = snapshot(args.commit, source) if source is not None else None
            facts = environment(pinned, commit)
            print("starting the upstreams, the floors and the gateway", file=sys.stderr)
            urls = start_targets(bench, source, upstreams, floors)
            pin_self(pinned)
            results = uvloop.run(measure(bench, urls, args))
            died = [p.name for p in bench.processes if p.popen.poll() is not None]
            logged = tail(next(p for p in bench.processes if p.name == "gateway"), 20)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return None
        finally:
            bench.stop()
    return Run(facts, results, died, logged)


def pin_self(pinned: bool) -> None:
    """This process (the load generator) on core 0, beside the upstreams."""
    if pinned and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
