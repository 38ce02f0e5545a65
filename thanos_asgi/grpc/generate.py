"""Regenerate the checked-in stubs from `proto/thanos.proto` (needs grpcio-tools):

    python -m thanos_asgi.grpc.generate            # rewrite thanos_asgi/grpc/thanos_pb2*.py*
    python -m thanos_asgi.grpc.generate --out DIR  # somewhere else (the freshness test does)

grpc_tools.protoc writes `thanos_pb2.py`, `thanos_pb2.pyi` and `thanos_pb2_grpc.py`; the one
change made afterwards is the import of `thanos_pb2` in the gRPC module, which protoc writes
as a top-level import and which must be relative inside this package.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto" / "thanos.proto"
OUTPUTS = ("thanos_pb2.py", "thanos_pb2.pyi", "thanos_pb2_grpc.py")
_TOP_LEVEL_IMPORT = "import thanos_pb2 as thanos__pb2"
_RELATIVE_IMPORT = "from . import thanos_pb2 as thanos__pb2"


def generate(out: Path = HERE, proto: Path = PROTO) -> list[Path]:
    """Run protoc on `proto` into `out`; return the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # a build-time tool

    includes = str(files("grpc_tools") / "_proto")  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto.parent}",
        f"--proto_path={includes}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        proto.name,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto}")
    grpc_module = out / "thanos_pb2_grpc.py"
    text = grpc_module.read_text()
    if _TOP_LEVEL_IMPORT not in text:
        raise RuntimeError(f"protoc output changed: no {_TOP_LEVEL_IMPORT!r} in {grpc_module}")
    grpc_module.write_text(text.replace(_TOP_LEVEL_IMPORT, _RELATIVE_IMPORT, 1))
    return [out / name for name in OUTPUTS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thanos_asgi.grpc.generate")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
