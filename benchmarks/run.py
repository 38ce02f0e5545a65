"""Benchmark the gateway against a direct call and a minimal pass-through, in one run.

    python benchmarks/run.py              # the full suite (about 70 s per repetition)
    python benchmarks/run.py --repeat 3   # medians of three interleaved repetitions
    python benchmarks/run.py --smoke      # a few checked requests per target, < 20 s

Starts, each as its own process on a free loopback port: the fake upstream (`upstream.py`)
twice - one answering at once, one pacing its stream chunks - the floor (`floor.py`) in front
of each, and two gateways (`thanos serve`) with a generated config routing `bench-model` and
`paced-model` to them, the second also with a client key and rate limits (`targets.py`).
Then measures direct-to-upstream, floor, gateway and gateway-keys with `load.py`.
On a machine with two or more cores the gateways and the floor run on core 1, the upstreams
and the load generator on core 0 (`taskset`). Every process is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from targets import CONFIG_EXTRA, GATEWAY_CONFIG, GATEWAYS, MEMORY, SERVES, TARGETS, check_keys

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
PACKAGES = ("thanos-asgi", "aiohttp", "uvicorn", "uvloop", "httptools", "msgspec")
PACED_DELAY_MS = 5.0
BUSY_SHARE = 0.10  # other processes using more than this share of a core: a warning


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


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


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


def start_all(bench: Bench, source: Path | None) -> None:
    fast, paced, floor, floor_paced = (free_port() for _ in range(4))
    upstream = [PYTHON, str(HERE / "upstream.py"), "--chunks", str(bench.chunks)]
    started = [
        bench.start("upstream", [*upstream, "--port", str(fast)], 0, fast),
        bench.start(
            "upstream-paced",
            [*upstream, "--port", str(paced), "--delay-ms", str(PACED_DELAY_MS)],
            0,
            paced,
        ),
    ]
    for name, port, up in (("floor", floor, fast), ("floor-paced", floor_paced, paced)):
        argv = [PYTHON, str(HERE / "floor.py"), "--port", str(port)]
        started.append(
            bench.start(name, [*argv, "--upstream", f"http://127.0.0.1:{up}/v1"], 1, port)
        )
    env = dict(os.environ)
    if source is not None:  # the snapshot comes first on sys.path, before the installed package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    ports = {"direct": fast, "floor": floor, "direct-paced": paced, "floor-paced": floor_paced}
    for name in GATEWAYS:
        port = ports[name] = ports[f"{name}-paced"] = free_port()
        config = bench.workdir / f"{name}.toml"
        config.write_text(
            GATEWAY_CONFIG.format(port=port, fast=fast, paced=paced) + CONFIG_EXTRA[name]
        )
        serve = [*thanos_command(), "serve", "--config", str(config)]
        serve += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        data = {"XDG_DATA_HOME": str(bench.workdir / name)}  # its own usage ledger, no key store
        started.append(bench.start(name, serve, 1, port, env | data))
    for process in started:
        wait_ready(process)
    path = "/v1/chat/completions"
    bench.urls = {name: f"http://127.0.0.1:{port}{path}" for name, port in ports.items()}
    check_keys(bench.urls["gateway-keys"])


# -- measuring ---------------------------------------------------------------------------------

Results = dict[str, dict[str, Any]]  # "latency/stream/gateway" -> what load.py printed


def measure(bench: Bench, args: argparse.Namespace) -> Results:
    results: Results = {}
    chunks = ["--chunks", str(bench.chunks)]
    for mode in ("plain", "stream"):
        flags = ["--stream"] if mode == "stream" else []
        for target in TARGETS:
            sequential = ["--requests", str(args.requests), "--warmup", str(args.warmup)]
            print(f"  latency    {mode:6} {target}", file=sys.stderr, flush=True)
            results[f"latency/{mode}/{target}"] = bench.load(
                "latency", bench.urls[target], *flags, *chunks, *sequential
            )
        if args.smoke:
            continue
        for target in TARGETS:
            print(f"  throughput {mode:6} {target}", file=sys.stderr, flush=True)
            load = ["--connections", str(args.connections), "--engine", args.engine]
            warm = ["--duration", "1"]
            bench.load("throughput", bench.urls[target], *flags, *load, *warm)
            timed = ["--duration", str(args.duration)]
            pid = bench.pid(SERVES[target])
            before = cpu_seconds(pid)
            result = bench.load("throughput", bench.urls[target], *flags, *load, *timed)
            used = cpu_seconds(pid) - before
            result["cpu_ms_per_request"] = used * 1000 / max(1, result["requests"])
            results[f"throughput/{mode}/{target}"] = result
    paced = ["--requests", str(args.paced_requests), "--warmup", "3", "--model", "paced-model"]
    for target in TARGETS:
        print(f"  latency    paced  {target}", file=sys.stderr, flush=True)
        results[f"latency/paced/{target}"] = bench.load(
            "latency", bench.urls[f"{target}-paced"], "--stream", *chunks, *paced
        )
    return results


def merge(runs: list[Results]) -> Results:
    """Per measurement, the median of every number over the repetitions; errors summed.
    Only measurements every repetition has (runs saved before a target existed lack it)."""
    merged: Results = {}
    for key in [key for key in runs[0] if all(key in run for run in runs)]:
        rows = [run[key] for run in runs]
        row: dict[str, Any] = {}
        for name, value in rows[0].items():
            values = [r.get(name) for r in rows]
            if name == "errors" or name == "requests":
                row[name] = sum(v for v in values if isinstance(v, int))
            elif isinstance(value, float | int) and not isinstance(value, bool):
                numbers = [v for v in values if isinstance(v, float | int)]
                row[name] = statistics.median(numbers)
                row[f"{name}_range"] = (min(numbers), max(numbers))
            elif name == "problems":
                row[name] = [p for r in rows for p in r.get("problems", [])][:5]
            else:
                row[name] = value
        merged[key] = row
    return merged


# -- reporting ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b or a != a or b != b else f"{a / b:.2f}x"


def spread(row: dict[str, Any], name: str, digits: int) -> str:
    low, high = row.get(f"{name}_range", (None, None))
    return "-" if low is None else f"{low:,.{digits}f}-{high:,.{digits}f}"


def table(header: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(results: Results, args: argparse.Namespace, rss: dict[str, float | None]) -> str:
    """Markdown tables; with --repeat, a min-max column beside each headline median."""
    ranged = args.repeat > 1
    out: list[str] = []
    targets = [target for target in TARGETS if f"latency/plain/{target}" in results]

    def emit(title: str, header: list[str], rows: list[list[str]], at: int) -> None:
        """The table, without its range column (index `at`) when there was one repetition."""
        if not ranged:
            header = header[:at] + header[at + 1 :]
            rows = [row[:at] + row[at + 1 :] for row in rows]
        out.append(f"{title}\n\n{table(header, rows)}\n")

    if not args.smoke:
        rows = []
        for mode in ("plain", "stream"):
            direct = results[f"throughput/{mode}/direct"]["rps"]
            floor = results[f"throughput/{mode}/floor"]["rps"]
            for target in targets:
                r = results[f"throughput/{mode}/{target}"]
                rows.append(
                    [
                        mode,
                        target,
                        f"{r['rps']:,.0f}",
                        spread(r, "rps", 0),
                        ratio(r["rps"], direct),
                        ratio(r["rps"], floor),
                        fmt(r.get("cpu_ms_per_request"), 3),
                        str(r["errors"]),
                        fmt(r["p50_ms"]),
                        fmt(r["p99_ms"]),
                    ]
                )
        engine = results["throughput/plain/direct"]["engine"]
        title = (
            f"Throughput: {args.connections} connections, {args.duration} s each, "
            f"load generator {engine}; CPU ms/req = CPU time of the serving process (the "
            "upstream for direct) over the run / requests"
        )
        header = ["mode", "target", "req/s", "req/s range", "vs direct", "vs floor",
                  "CPU ms/req", "errors", "p50 ms", "p99 ms"]  # fmt: skip
        emit(title, header, rows, 3)

    rows = []
    for mode in ("plain", "stream"):
        direct = results[f"latency/{mode}/direct"]
        floor = results[f"latency/{mode}/floor"]
        for target in targets:
            r = results[f"latency/{mode}/{target}"]
            added = [None if target == "direct" else r[q] - direct[q] for q in ("p50_ms", "p99_ms")]
            rows.append(
                [
                    mode,
                    target,
                    fmt(r["p50_ms"], 3),
                    spread(r, "p50_ms", 3),
                    fmt(r["p99_ms"], 3),
                    fmt(added[0], 3),
                    fmt(added[1], 3),
                    ratio(r["p50_ms"], direct["p50_ms"]),
                    ratio(r["p50_ms"], floor["p50_ms"]),
                    fmt(r.get("overhead_p50_ms"), 3),
                    fmt(r.get("overhead_p99_ms"), 3),
                    str(r["errors"]),
                ]
            )
    title = (
        f"Latency: 1 connection, {args.requests} sequential requests after {args.warmup} "
        "warm-up (stream: until the last byte)"
    )
    header = ["mode", "target", "p50 ms", "p50 range", "p99 ms", "added p50", "added p99",
              "p50 vs direct", "p50 vs floor", "overhead hdr p50", "overhead hdr p99",
              "errors"]  # fmt: skip
    emit(title, header, rows, 3)

    rows = []
    streams = {
        "stream": f"{args.chunks} chunks, no delay",
        "paced": f"{args.chunks} chunks, {PACED_DELAY_MS:g} ms apart",
    }
    for mode, label in streams.items():
        direct = results[f"latency/{mode}/direct"]
        for target in targets:
            r = results[f"latency/{mode}/{target}"]
            later = None if target == "direct" else r["ttfb_p50_ms"] - direct["ttfb_p50_ms"]
            rows.append(
                [
                    label,
                    target,
                    fmt(r["ttfb_p50_ms"], 3),
                    spread(r, "ttfb_p50_ms", 3),
                    fmt(r["ttfb_p99_ms"], 3),
                    fmt(later, 3),
                    fmt(r["p50_ms"], 3),
                    fmt(r["p99_ms"], 3),
                    str(r["errors"]),
                ]
            )
    title = "Streams: time to the first body bytes and to the last byte, 1 connection"
    header = ["upstream", "target", "TTFB p50 ms", "TTFB p50 range", "TTFB p99 ms",
              "added TTFB p50", "total p50 ms", "total p99 ms", "errors"]  # fmt: skip
    emit(title, header, rows, 3)
    peaks = ", ".join(f"{name} {fmt(rss.get(name), 1)} MiB" for name in MEMORY)
    out.append(f"Peak RSS (VmHWM): {peaks}")
    return "\n".join(out)


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


OPTIONS = ("smoke", "duration", "connections", "requests", "warmup", "chunks", "engine")


def show(records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the facts and tables of one or more runs (their repetitions pooled)."""
    for record in records:
        print(record["facts"])
        other, steal = record["other_cpu"], record["steal"]
        print(
            f"CPU used by other processes during the run: {other:.0%} of a core on average "
            f"(includes kernel time for our own loopback traffic); stolen by the hypervisor: "
            f"{steal:.0%}"
        )
        if other > BUSY_SHARE or steal > BUSY_SHARE:
            print("WARNING: the machine was not quiet; these figures measure contention too")
    runs = [run for record in records for run in record["runs"]]
    if len(runs) > 1:
        print(f"medians of {len(runs)} repetitions ({len(records)} runs); errors summed")
    rss = {name: max((r["rss_mib"].get(name) or 0.0) for r in records) or None for name in MEMORY}
    print()
    print(report(merge(runs), argparse.Namespace(**{**vars(args), "repeat": len(runs)}), rss))


def conclude(
    args: argparse.Namespace,
    record: dict[str, Any],
    summary: str,
    text: str,
    logged: str,
    problems: list[str],
    smoke: str,
) -> int:
    """The end of a `streams.py` or `memory.py` run: save, print, and 1 if anything was wrong."""
    if args.json:
        args.json.write_text(json.dumps(record, default=str))
    print(record["facts"])
    print(summary)
    print()
    print(text)
    if logged.strip():
        print(f"\ngateway log (last lines):\n{logged}")
    if problems:
        print("\nFAILED:\n" + "\n".join(problems))
        return 1
    if args.smoke:
        print(f"\nsmoke: {smoke}")
    return 0


def smoke_failures(results: Results) -> list[str]:
    failures = []
    for key, row in results.items():
        if row["errors"] or not row["requests"]:
            failures.append(f"{key}: {row['errors']} errors, {row['requests']} good answers")
            failures += [f"    {problem}" for problem in row.get("problems", [])]
    return failures


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few checked requests, no timing")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; medians reported")
    parser.add_argument("--duration", type=int, default=6, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000, help="sequential, per latency run")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--paced-requests", type=int, default=40)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--engine", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--commit", help="run the gateway from this commit (git archive), not the work tree"
    )
    parser.add_argument(
        "--report", type=Path, nargs="+", metavar="JSON", help="print runs saved with --json"
    )
    args = parser.parse_args()
    if args.report:
        records = [json.loads(path.read_text()) for path in args.report]
        if any(r["options"] != records[0]["options"] for r in records):
            parser.error("these runs used different options; they cannot be pooled")
        args.__dict__.update(records[0]["options"])
        show(records, args)
        return 0
    if args.smoke:
        args.repeat, args.requests, args.warmup, args.paced_requests = 1, 5, 1, 3
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None

    started = time.monotonic()
    busy_before, steal_before = machine_cpu_seconds()
    own_before = own_cpu_seconds()
    runs: list[Results] = []
    rss: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="thanos-bench-") as tmp, terminate_on_sigterm():
        bench = Bench(Path(tmp), pinned, args.chunks)
        source = Path(tmp) / "src" if args.commit else None
        try:
            commit = snapshot(args.commit, source) if source is not None else None
            facts = environment(pinned, commit)  # before the gateway loads its code
            print("starting upstreams, floors and the gateways", file=sys.stderr)
            start_all(bench, source)
            for repetition in range(args.repeat):
                print(f"repetition {repetition + 1}/{args.repeat}", file=sys.stderr)
                runs.append(measure(bench, args))
            died = [
                f"{p.name} exited ({p.popen.returncode}) during the run:\n{tail(p)}"
                for p in bench.processes
                if p.popen.poll() is not None
            ]
            for process in bench.processes:
                if process.name in MEMORY:
                    rss[process.name] = peak_rss_mib(process.popen.pid)
            logged = {p.name: tail(p, 20) for p in bench.processes if p.name in GATEWAYS}
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.stop()
    if died:
        print("\n".join(died))
        return 1
    # everything started has been waited for, so its CPU time is in os.times()
    busy_after, steal_after = machine_cpu_seconds()
    wall = time.monotonic() - started
    other = max(0.0, busy_after - busy_before - (own_cpu_seconds() - own_before)) / wall
    steal = (steal_after - steal_before) / wall
    record = {
        "facts": facts,
        "other_cpu": other,
        "steal": steal,
        "options": {name: getattr(args, name) for name in OPTIONS},
        "runs": runs,
        "rss_mib": rss,
    }
    if args.json:
        args.json.write_text(json.dumps(record))
    show([record], args)
    for name, text in logged.items():
        if text.strip():
            print(f"\n{name} log (last lines):\n{text}")
    failures = smoke_failures(merge(runs))
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        return 1
    if args.smoke:
        print("\nsmoke: every answer was 200 and well-formed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
