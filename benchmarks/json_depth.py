"""What the JSON nesting check (`thanos_asgi.sanitize.check_depth`) costs per decode.

    python benchmarks/json_depth.py

For each body: the check alone, and msgspec's untyped decode of the same bytes, best of 5
runs (timeit). The check is a `count` of openers for most bodies (<= 128 `[`/`{`), and a few
C-speed passes (`translate`, `replace`, `split`) for the rest.
"""

from __future__ import annotations

import contextlib
import json
import platform
import timeit

import msgspec

from thanos_asgi.sanitize import check_depth


def bodies() -> dict[str, bytes]:
    hi = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 40}]}
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "array", "items": {"type": "integer"}},
        },
    }
    tools = [
        {"type": "function", "function": {"name": f"t{i}", "parameters": schema}} for i in range(40)
    ]
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "word"}}],
    }
    return {
        "chunk (stream event)": json.dumps(chunk).encode(),
        "chat, 1 message": json.dumps(hi).encode(),
        "chat, 50 messages + 40 tools": json.dumps(
            {**hi, "messages": hi["messages"] * 50, "tools": tools}
        ).encode(),
        "chat, 2 MB (2000 messages)": json.dumps(
            {**hi, "messages": hi["messages"] * 2000 * 4}
        ).encode(),
        "refused: 5000 levels": b"[" * 5000 + b"]" * 5000,
    }


def best(fn: object, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number  # type: ignore[arg-type]


def main() -> None:
    print(
        f"Python {platform.python_version()}, msgspec {msgspec.__version__}, {platform.machine()}"
    )
    for name, body in bodies().items():
        number = 20 if len(body) > 100_000 else 2000

        def check(body: bytes = body) -> None:
            with contextlib.suppress(msgspec.DecodeError):
                check_depth(body)

        def decode(body: bytes = body) -> None:
            with contextlib.suppress(RecursionError):
                msgspec.json.decode(body)

        openers = body.count(b"[") + body.count(b"{")
        checked, decoded = best(check, number) * 1e6, best(decode, number) * 1e6
        print(
            f"{name:30} {len(body):>9,} B {openers:>5} openers  "
            f"check {checked:8.1f} us  decode {decoded:8.1f} us"
        )


if __name__ == "__main__":
    main()
