"""Write the bundled price snapshot, `thanos_asgi/governance/data/prices.json`, from models.dev.

    python scripts/make_prices.py [--source ../shared/models.dev/api.json] [--out PATH]

The trimming is `thanos_asgi.governance.pricing.snapshot_from_models_dev` (also used by live
refreshes): only the providers we route to, keyed by our provider kind, and per model only
the input,
output, cache-read and cache-write prices (USD per 1M tokens). The output is deterministic:
keys sorted, one model per line, so a regeneration diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from thanos_asgi.governance.pricing import snapshot_from_models_dev

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "models.dev" / "api.json"
OUT = ROOT / "thanos_asgi" / "governance" / "data" / "prices.json"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def render(snapshot: dict[str, Any]) -> str:
    """The snapshot as JSON text, keys in order, one line per model."""
    entries = [
        f"  {_dumps(key)}: {_render_prices(value) if key == 'prices' else _dumps(value)}"
        for key, value in snapshot.items()
    ]
    return "{\n" + ",\n".join(entries) + "\n}\n"


def _render_prices(prices: dict[str, dict[str, Any]]) -> str:
    kinds = [
        f"    {_dumps(kind)}: {{\n"
        + ",\n".join(f"      {_dumps(model)}: {_dumps(cost)}" for model, cost in models.items())
        + "\n    }"
        for kind, models in prices.items()
    ]
    return "{\n" + ",\n".join(kinds) + "\n  }"


def generate(source: Path = SOURCE) -> str:
    data = json.loads(source.read_text(encoding="utf-8"))
    return render(snapshot_from_models_dev(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = generate(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
