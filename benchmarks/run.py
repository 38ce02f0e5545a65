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

Its parts: `processes.py` starts and stops the processes, `machine.py` describes the machine and
how busy it was, `report.py` prints the tables (and pools runs saved with `--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from machine import OtherLoad, cpu_seconds, environment, peak_rss_mib
from paths import GATEWAY_EXTRA, PATHS, REDIS_URL, check_redis, flush_redis, selected
from processes import (
    HERE,
    PYTHON,
    Bench,
    free_port,
    snapshot,
    tail,
    terminate_on_sigterm,
    thanos_command,
    wait_ready,
)
from report import Results, merge, show
from targets import (
    CONFIG_EXTRA,
    FLOORS,
    GATEWAY_CONFIG,
    GATEWAYS,
    MEMORY,
    PACED_DELAY_MS,
    SERVES,
    TARGETS,
    check_keys,
)

OPTIONS = ("smoke", "duration", "connections", "requests", "warmup", "chunks", "engine", "targets")


def start_all(bench: Bench, source: Path | None, args: argparse.Namespace) -> None:
    fast, paced = free_port(), free_port()
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
    ports = {"direct": fast, "direct-paced": paced}
    for floor, framework in FLOORS.items():
        for name, up in ((floor, fast), (f"{floor}-paced", paced)):
            port = ports[name] = free_port()
            argv = [PYTHON, str(HERE / "floor.py"), "--port", str(port), "--framework", framework]
            argv += ["--gc-like-thanos"] if args.floor_gc else []
            started.append(
                bench.start(name, [*argv, "--upstream", f"http://127.0.0.1:{up}/v1"], 1, port)
            )
    env = dict(os.environ)
    if source is not None:  # the snapshot comes first on sys.path, before the installed package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
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
    extra = {PATHS[target].gateway: free_port() for target in args.paths}
    if "gateway-redis" in extra:
        flush_redis(args.redis_url)
    for name, port in extra.items():
        config = bench.workdir / f"{name}.toml"
        text = GATEWAY_CONFIG + GATEWAY_EXTRA[name]
        config.write_text(text.format(port=port, fast=fast, paced=paced, redis=args.redis_url))
        serve = [*thanos_command(), "serve", "--config", str(config)]
        serve += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        data = {"XDG_DATA_HOME": str(bench.workdir / name)}
        started.append(bench.start(name, serve, 1, port, env | data))
    for process in started:
        wait_ready(process)
    path = "/v1/chat/completions"
    bench.urls = {name: f"http://127.0.0.1:{port}{path}" for name, port in ports.items()}
    for target in args.paths:
        where = PATHS[target]
        bench.urls[target] = f"http://127.0.0.1:{extra[where.gateway]}{where.route}"
    check_keys(bench.urls["gateway-keys"])
    if "gateway-redis" in extra:
        check_redis(bench.urls["gateway-redis"], args.redis_url)


# -- measuring ---------------------------------------------------------------------------------


def measure(bench: Bench, args: argparse.Namespace) -> Results:
    results: Results = {}
    chunks = ["--chunks", str(bench.chunks)]
    targets = [*TARGETS, *args.paths]
    for mode in ("plain", "stream"):
        for target in targets:
            flags = dialect(target) + (["--stream"] if mode == "stream" else [])
            sequential = ["--requests", str(args.requests), "--warmup", str(args.warmup)]
            print(f"  latency    {mode:6} {target}", file=sys.stderr, flush=True)
            results[f"latency/{mode}/{target}"] = bench.load(
                "latency", bench.urls[target], *flags, *chunks, *sequential
            )
        if args.smoke:
            continue
        for target in targets:
            flags = dialect(target) + (["--stream"] if mode == "stream" else [])
            print(f"  throughput {mode:6} {target}", file=sys.stderr, flush=True)
            load = ["--connections", str(args.connections), "--engine", args.engine]
            warm = ["--duration", "1"]
            bench.load("throughput", bench.urls[target], *flags, *load, *warm)
            timed = ["--duration", str(args.duration)]
            pid = bench.pid(PATHS[target].gateway if target in PATHS else SERVES[target])
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


def dialect(target: str) -> list[str]:
    """load.py's options for a `--targets` path: its client dialect and model."""
    if target not in PATHS:
        return []
    return ["--dialect", PATHS[target].dialect, "--model", PATHS[target].model]


def smoke_failures(results: Results) -> list[str]:
    failures = []
    for key, row in results.items():
        if row["errors"] or not row["requests"]:
            failures.append(f"{key}: {row['errors']} errors, {row['requests']} good answers")
            failures += [f"    {problem}" for problem in row.get("problems", [])]
    return failures


# -- running -----------------------------------------------------------------------------------


def arguments() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--targets",
        help="also measure these paths (paths.py): all, or names separated by commas; "
        f"default none, all with --smoke ({', '.join(PATHS)})",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="gateway-redis's (flushed)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--floor-gc",
        action="store_true",
        help="give the floors the garbage-collector settings `thanos serve` takes",
    )
    parser.add_argument(
        "--commit", help="run the gateway from this commit (git archive), not the work tree"
    )
    parser.add_argument(
        "--report", type=Path, nargs="+", metavar="JSON", help="print runs saved with --json"
    )
    return parser


@dataclass
class Outcome:
    """What a run measured, and what else it saw."""

    facts: str
    runs: list[Results]
    rss: dict[str, float | None]
    died: list[str]
    logged: dict[str, str]


def run_all(args: argparse.Namespace, pinned: bool) -> Outcome | None:
    """Start everything, measure `--repeat` times, stop everything; None if that failed."""
    runs: list[Results] = []
    rss: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="thanos-bench-") as tmp, terminate_on_sigterm():
        bench = Bench(Path(tmp), pinned, args.chunks)
        source = Path(tmp) / "src" if args.commit else None
        try:
            commit = snapshot(args.commit, source) if source is not None else None
            facts = environment(pinned, commit)  # before the gateway loads its code
            if args.floor_gc:
                facts += "\nfloors: with the garbage-collector settings of `thanos serve`"
            print("starting upstreams, floors and the gateways", file=sys.stderr)
            start_all(bench, source, args)
            for repetition in range(args.repeat):
                print(f"repetition {repetition + 1}/{args.repeat}", file=sys.stderr)
                runs.append(measure(bench, args))
            died = [
                f"{p.name} exited ({p.popen.returncode}) during the run:\n{tail(p)}"
                for p in bench.processes
                if p.popen.poll() is not None
            ]
            for process in bench.processes:
                if process.name in MEMORY or process.name in GATEWAY_EXTRA:
                    rss[process.name] = peak_rss_mib(process.popen.pid)
            serving = (*GATEWAYS, *GATEWAY_EXTRA)
            logged = {p.name: tail(p, 20) for p in bench.processes if p.name in serving}
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return None
        finally:
            bench.stop()
    return Outcome(facts, runs, rss, died, logged)


def finish(args: argparse.Namespace, outcome: Outcome, others: OtherLoad) -> int:
    """Save and print the run; 1 if any process died or any answer was wrong."""
    if outcome.died:
        print("\n".join(outcome.died))
        return 1
    # everything started has been waited for, so its CPU time is in os.times()
    other, steal = others.shares()
    record = {
        "facts": outcome.facts,
        "other_cpu": other,
        "steal": steal,
        "options": {name: getattr(args, name) for name in OPTIONS},
        "runs": outcome.runs,
        "rss_mib": outcome.rss,
    }
    if args.json:
        args.json.write_text(json.dumps(record))
    show([record], args)
    for name, text in outcome.logged.items():
        if text.strip():
            print(f"\n{name} log (last lines):\n{text}")
    failures = smoke_failures(merge(outcome.runs))
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        return 1
    if args.smoke:
        print("\nsmoke: every answer was 200 and well-formed")
    return 0


def main() -> int:
    parser = arguments()
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
    if args.targets is None:
        args.targets = "all" if args.smoke else "base"
    try:
        args.paths = selected(args.targets)
    except ValueError as exc:
        parser.error(str(exc))
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    others = OtherLoad()
    outcome = run_all(args, pinned)
    return 1 if outcome is None else finish(args, outcome, others)


if __name__ == "__main__":
    raise SystemExit(main())
