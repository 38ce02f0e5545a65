"""Running the gRPC server: alone, inside a host app's lifespan, or next to uvicorn.

    server = await start_grpc(gateway, "127.0.0.1:50051")   # ThanosService + health + reflection
    ...
    await server.stop(grace=5)

    async with grpc_lifespan(gateway, "127.0.0.1:50051"):   # in a FastAPI/Starlette lifespan
        yield

`serve_both` is what `thanos serve` runs when `[server] grpc` is set: uvicorn and the gRPC
server in one event loop, one Gateway, and one signal handler that stops both gracefully.

TLS: pass `tls=(certificate_chain_pem, private_key_pem)`. The config has no TLS keys yet;
when it gets them (`[server] grpc_tls_cert` / `grpc_tls_key`), `thanos serve` passes them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from thanos_asgi.grpc.servicer import KeyLookup, ThanosServicer

if TYPE_CHECKING:
    from thanos_asgi.core.gateway import Gateway
    from thanos_asgi.frontends.asgi import ASGIApp

SERVICE_NAME = "thanos.ThanosService"
Tls = tuple[bytes, bytes]  # (certificate chain PEM, private key PEM)


async def start_grpc(
    gateway: Gateway, address: str, *, tls: Tls | None = None, keys: KeyLookup | None = None
) -> grpc.aio.Server:
    """Bind `address` ("host:port"), start serving, and return the running server.

    Serves `thanos.ThanosService`, the standard `grpc.health.v1.Health` service (SERVING for
    "" and "thanos.ThanosService") and server reflection. Requests up to the gateway's
    `max_body_bytes` are accepted. Raises OSError when the address cannot be bound.
    """
    limit = gateway.config.server.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared socket
            ("grpc.max_receive_message_length", limit),
        ]
    )
    ThanosServicer(gateway, keys=keys).add_to_server(server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", SERVICE_NAME):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    try:
        if tls is None:
            server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
            server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio's way of saying "cannot bind"
        raise OSError(f"cannot serve gRPC on {address}: {exc}") from None
    await server.start()
    return server


@contextlib.asynccontextmanager
async def grpc_lifespan(
    gateway: Gateway,
    address: str,
    *,
    tls: Tls | None = None,
    keys: KeyLookup | None = None,
    grace: float = 5.0,
) -> AsyncIterator[grpc.aio.Server]:
    """The gRPC server for the duration of a host app's lifespan; in-flight calls get `grace`."""
    server = await start_grpc(gateway, address, tls=tls, keys=keys)
    try:
        yield server
    finally:
        await server.stop(grace)


class _Uvicorn(uvicorn.Server):
    """uvicorn minus its own signal handling: `serve_both` stops both servers itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_both(
    app: ASGIApp,
    gateway: Gateway,
    http_host: str,
    http_port: int,
    grpc_address: str,
    *,
    tls: Tls | None = None,
    grace: float = 10.0,
    **uvicorn_options: Any,
) -> None:
    """uvicorn (serving `app`) and gRPC in this event loop until SIGINT or SIGTERM; then both
    stop taking new work and finish what is in flight (gRPC within `grace` seconds), and the
    gateway closes last. A second SIGINT stops at once. `uvicorn_options` go to uvicorn.Config.
    """
    config = uvicorn.Config(app, host=http_host, port=http_port, lifespan="off", **uvicorn_options)
    server = _Uvicorn(config)  # lifespan off: the gateway's lifetime is managed here
    async with gateway:
        rpc = await start_grpc(gateway, grpc_address, tls=tls)
        scheme = "grpcs" if tls else "grpc"
        logging.getLogger("uvicorn.error").info("gRPC running on %s://%s", scheme, grpc_address)
        stopping = asyncio.Event()
        with _signals(server, rpc, stopping):
            http_task = asyncio.create_task(_serve_http(server))
            stopped = asyncio.create_task(stopping.wait())
            await asyncio.wait((http_task, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            server.should_exit = True
            _, started = await asyncio.gather(rpc.stop(grace), http_task)
    if not started:
        raise OSError(f"the HTTP server could not start on {http_host}:{http_port}")


async def _serve_http(server: uvicorn.Server) -> bool:
    """Run uvicorn; False when it could not start (it logs why and raises SystemExit)."""
    try:
        await server.serve()
    except SystemExit:
        return False
    return True


@contextlib.contextmanager
def _signals(
    server: uvicorn.Server, rpc: grpc.aio.Server, stopping: asyncio.Event
) -> Iterator[None]:
    """SIGINT/SIGTERM: stop gracefully; a second SIGINT: stop now (uvicorn's convention)."""
    loop = asyncio.get_running_loop()
    forced: set[asyncio.Task[None]] = set()

    def stop(sig: signal.Signals) -> None:
        if stopping.is_set() and sig == signal.SIGINT:
            server.force_exit = True
            forced.add(loop.create_task(rpc.stop(None)))  # ends in-flight calls now
        server.should_exit = True
        stopping.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
