"""gRPC front-end (needs the `grpc` extra): `thanos.ThanosService` over the same Gateway as HTTP.

    from thanos_asgi.grpc import ThanosServicer, grpc_lifespan, start_grpc

Names load on first use, so `python -m thanos_asgi.grpc.generate` works even while the
generated stubs are out of date.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ThanosServicer", "grpc_lifespan", "serve_both", "start_grpc"]

if TYPE_CHECKING:
    from thanos_asgi.grpc.server import grpc_lifespan, serve_both, start_grpc
    from thanos_asgi.grpc.servicer import ThanosServicer


def __getattr__(name: str) -> Any:
    if name == "ThanosServicer":
        from thanos_asgi.grpc.servicer import ThanosServicer

        return ThanosServicer
    if name in ("grpc_lifespan", "serve_both", "start_grpc"):
        from thanos_asgi.grpc import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
