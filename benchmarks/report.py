"""What the benchmarks print: Markdown tables, `run.py`'s report of its results, the pooling of
runs saved with `--json` (`run.py --report`), and the common ending of `streams.py` and
`memory.py`. The table helpers (`fmt`, `ratio`, `table`) are shared by every script.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from typing import Any

from machine import quietness
from paths import GATEWAY_EXTRA, PATHS
from targets import MEMORY, PACED_DELAY_MS, TARGETS

Results = dict[str, dict[str, Any]]  # "latency/stream/gateway" -> what load.py printed
Table = tuple[str, list[str], list[list[str]]]  # title, header, rows
RANGE = 3  # the index of every table's range column, dropped with one repetition


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


def report(results: Results, args: argparse.Namespace, rss: dict[str, float | None]) -> str:
    """Markdown tables; with --repeat, a min-max column beside each headline median."""
    targets = [target for target in TARGETS if f"latency/plain/{target}" in results]
    tables = [] if args.smoke else [_throughput(results, args, targets)]
    tables += [_latency(results, args, targets), _streams(results, args, targets)]
    out = [_section(*each, ranged=args.repeat > 1) for each in tables]
    if not args.smoke and "throughput/plain/floor" in results:
        out.append(_section(*_goals(results, targets), ranged=True))  # (no range column)
    paths = [target for target in PATHS if f"latency/plain/{target}" in results]
    if paths and not args.smoke:
        out.append(_section(*_paths_throughput(results, args, paths), ranged=args.repeat > 1))
    if paths:
        out.append(_section(*_paths_latency(results, args, paths), ranged=args.repeat > 1))
    serving = [*MEMORY, *(name for name in GATEWAY_EXTRA if rss.get(name))]
    peaks = ", ".join(f"{name} {fmt(rss.get(name), 1)} MiB" for name in serving)
    out.append(f"Peak RSS (VmHWM): {peaks}")
    return "\n".join(out)


def _section(title: str, header: list[str], rows: list[list[str]], ranged: bool) -> str:
    """The table, without its range column when there was one repetition."""
    if not ranged:
        header = header[:RANGE] + header[RANGE + 1 :]
        rows = [row[:RANGE] + row[RANGE + 1 :] for row in rows]
    return f"{title}\n\n{table(header, rows)}\n"


def _throughput_rows(results: Results, targets: list[str], base: str) -> list[list[str]]:
    """Per mode and target: req/s, its range, over `base`'s and the floor's, CPU, errors."""
    rows = []
    for mode in ("plain", "stream"):
        against = results[f"throughput/{mode}/{base}"]["rps"]
        floor = results[f"throughput/{mode}/floor"]["rps"]
        for target in targets:
            r = results[f"throughput/{mode}/{target}"]
            rows.append(
                [
                    mode,
                    target,
                    f"{r['rps']:,.0f}",
                    spread(r, "rps", 0),
                    ratio(r["rps"], against),
                    ratio(r["rps"], floor),
                    fmt(r.get("cpu_ms_per_request"), 3),
                    str(r["errors"]),
                    fmt(r["p50_ms"]),
                    fmt(r["p99_ms"]),
                ]
            )
    return rows


def _throughput(results: Results, args: argparse.Namespace, targets: list[str]) -> Table:
    rows = _throughput_rows(results, targets, "direct")
    engine = results["throughput/plain/direct"]["engine"]
    title = (
        f"Throughput: {args.connections} connections, {args.duration} s each, "
        f"load generator {engine}; CPU ms/req = CPU time of the serving process (the "
        "upstream for direct) over the run / requests"
    )
    header = ["mode", "target", "req/s", "req/s range", "vs direct", "vs floor",
              "CPU ms/req", "errors", "p50 ms", "p99 ms"]  # fmt: skip
    return title, header, rows


def _latency(results: Results, args: argparse.Namespace, targets: list[str]) -> Table:
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
    return title, header, rows


def _streams(results: Results, args: argparse.Namespace, targets: list[str]) -> Table:
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
    return title, header, rows


def _goals(results: Results, targets: list[str]) -> Table:
    """Issue 9's throughput and latency targets, for each gateway against each floor: req/s
    over the floor's (goal >= 0.60) and latency added to direct's over the floor's (<= 1.5)."""
    floors = [t for t in targets if t.startswith("floor")]
    rows = []
    for gateway in [t for t in targets if t.startswith("gateway")]:
        for mode in ("plain", "stream"):
            rps = results[f"throughput/{mode}/{gateway}"]["rps"]
            base = results[f"latency/{mode}/direct"]["p50_ms"]
            added = results[f"latency/{mode}/{gateway}"]["p50_ms"] - base
            rows.append(
                [gateway, mode]
                + [ratio(rps, results[f"throughput/{mode}/{f}"]["rps"]) for f in floors]
                + [ratio(added, results[f"latency/{mode}/{f}"]["p50_ms"] - base) for f in floors]
            )
    title = (
        "Targets: throughput over each floor's (goal >= 0.60x), and p50 latency added to "
        "direct's at 1 connection over each floor's added p50 (goal <= 1.50x)"
    )
    header = ["target", "mode", *(f"req/s vs {f}" for f in floors)]
    header += [f"added p50 vs {f}" for f in floors]
    return title, header, rows


def _paths_throughput(results: Results, args: argparse.Namespace, paths: list[str]) -> Table:
    """`--targets` paths' throughput beside the pass-through's and the floor's, same run."""
    rows = _throughput_rows(results, ["gateway", *paths], "gateway")
    title = (
        f"Paths: throughput, {args.connections} connections, {args.duration} s each, beside the "
        "pass-through (gateway) and the floor measured in the same run (stream: whole streams/s)"
    )
    header = ["mode", "target", "req/s", "req/s range", "vs gateway", "vs floor",
              "CPU ms/req", "errors", "p50 ms", "p99 ms"]  # fmt: skip
    return title, header, rows


def _paths_latency(results: Results, args: argparse.Namespace, paths: list[str]) -> Table:
    """`--targets` paths' latency at one connection: what each adds to direct's."""
    rows = []
    for mode in ("plain", "stream"):
        direct = results[f"latency/{mode}/direct"]
        gateway = results[f"latency/{mode}/gateway"]
        floor = results[f"latency/{mode}/floor"]
        for target in ["gateway", *paths]:
            r = results[f"latency/{mode}/{target}"]
            added = [r[q] - direct[q] for q in ("p50_ms", "p99_ms")]
            rows.append(
                [
                    mode,
                    target,
                    fmt(r["p50_ms"], 3),
                    spread(r, "p50_ms", 3),
                    fmt(r["p99_ms"], 3),
                    fmt(added[0], 3),
                    fmt(added[1], 3),
                    ratio(added[0], gateway["p50_ms"] - direct["p50_ms"]),
                    ratio(added[0], floor["p50_ms"] - direct["p50_ms"]),
                    str(r["errors"]),
                ]
            )
    title = (
        f"Paths: latency, 1 connection, {args.requests} sequential requests after "
        f"{args.warmup} warm-up (stream: to the last byte); added = over direct's"
    )
    header = ["mode", "target", "p50 ms", "p50 range", "p99 ms", "added p50", "added p99",
              "added p50 vs gateway", "added p50 vs floor", "errors"]  # fmt: skip
    return title, header, rows


def show(records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the facts and tables of one or more runs (their repetitions pooled)."""
    for record in records:
        print(record["facts"])
        print(quietness(record["other_cpu"], record["steal"]))
    runs = [run for record in records for run in record["runs"]]
    if len(runs) > 1:
        print(f"medians of {len(runs)} repetitions ({len(records)} runs); errors summed")
    names = (*MEMORY, *GATEWAY_EXTRA)
    rss = {name: max((r["rss_mib"].get(name) or 0.0) for r in records) or None for name in names}
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
