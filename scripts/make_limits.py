"""Write the bundled output-limit snapshot, `thanos_asgi/governance/data/limits.json`.

    python scripts/make_limits.py [--source ../shared/models.dev/api.json] [--out PATH]

The trimming is `thanos_asgi.governance.catalogue.limits_from_models_dev`: the providers we
route to, keyed by our provider kind, and per model its `limit.output` (tokens). Deterministic:
keys sorted, one kind per line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from thanos_asgi.governance.catalogue import limits_from_models_dev

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "models.dev" / "api.json"
OUT = ROOT / "thanos_asgi" / "governance" / "data" / "limits.json"


def generate(source: Path = SOURCE) -> str:
    limits = limits_from_models_dev(json.loads(source.read_text(encoding="utf-8")))
    lines = [f"  {json.dumps(kind)}: {json.dumps(models)}" for kind, models in limits.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = generate(args.source)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
