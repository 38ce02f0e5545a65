"""Running the gRPC server: alone, inside a host app's lifespan, or next to uvicorn.

    server = await start_grpc(gateway, "127.0.0.1:50051")   # ThanosService + health + reflection
    ...
    await server.stop(grace=5)

    async with grpc_lifespan(gateway, "127.0.0.1:50051"):   # in a FastAPI/Starlette lifespan
        yield

`serve_both` is what `thanos serve` runs when `[server] grpc` is set: uvicorn and the gRPC
server in one event loop over one `Reloadable` (its current gateway), one signal handler that
stops both gracefully, and SIGHUP reloading both at once.

TLS: pass `tls=(certificate_chain_pem, private_key_pem)`; `thanos serve` passes the files of
`[server] tls_cert` / `tls_key`, which serve HTTPS too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from thanos_asgi.grpc import thanos_pb2 as pb
from thanos_asgi.grpc import thanos_pb2_grpc
from thanos_asgi.grpc.servicer import KeyLookup, ThanosServicer

if TYPE_CHECKING:
    from thanos_asgi.core.gateway import Gateway
    from thanos_asgi.frontends.stack import Reloadable

SERVICE_NAME = "thanos.ThanosService"
Tls = tuple[bytes, bytes]  # (certificate chain PEM, private key PEM)
Servicer: TypeAlias = "ThanosServicer | _Following"


async def start_grpc(
    gateway: Gateway, address: str, *, tls: Tls | None = None, keys: KeyLookup | None = None
) -> grpc.aio.Server:
    """Bind `address` ("host:port"), start serving, and return the running server.

    Serves `thanos.ThanosService`, the standard `grpc.health.v1.Health` service (SERVING for
    "" and "thanos.ThanosService") and server reflection. Requests up to the gateway's
    `max_body_bytes` are accepted. Raises OSError when the address cannot be bound.
    """
    servicer = ThanosServicer(gateway, keys=keys)
    return await _start(servicer, gateway.config.server.max_body_bytes, address, tls)


async def _start(servicer: Servicer, limit: int, address: str, tls: Tls | None) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared socket
            ("grpc.max_receive_message_length", limit),
        ]
    )
    register: Any = thanos_pb2_grpc.add_ThanosServiceServicer_to_server
    register(servicer, server)
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
    app: Reloadable,
    http_host: str,
    http_port: int,
    grpc_address: str,
    *,
    tls: Tls | None = None,
    grace: float = 10.0,
    ready: Callable[[], object] | None = None,
    reload: Callable[[], object] | None = None,
    **uvicorn_options: Any,
) -> None:
    """uvicorn (serving `app`) and gRPC (over `app`'s current gateway) in this event loop until
    SIGINT or SIGTERM; then both stop taking new work and finish what is in flight (gRPC
    within `grace` seconds), and the gateways close last. A second SIGINT stops at once.
    SIGHUP calls `reload` (default `app.reload`): HTTP and gRPC both serve the new config.
    `ready` is called once both listen. `uvicorn_options` go to uvicorn.Config.
    """
    config = uvicorn.Config(app, host=http_host, port=http_port, lifespan="off", **uvicorn_options)
    server = _Uvicorn(config)  # lifespan off: the gateways' lifetime is managed here
    limit = app.gateway.config.server.max_body_bytes
    try:
        rpc = await _start(_Following(app), limit, grpc_address, tls)
        scheme = "grpcs" if tls else "grpc"
        logging.getLogger("uvicorn.error").info("gRPC running on %s://%s", scheme, grpc_address)
        stopping = asyncio.Event()
        with _signals(server, rpc, stopping, reload or app.reload):
            http_task = asyncio.create_task(_serve_http(server))
            stopped = asyncio.create_task(stopping.wait())
            if ready is not None and await _started(server, http_task):
                ready()
            await asyncio.wait((http_task, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            server.should_exit = True
            _, started = await asyncio.gather(rpc.stop(grace), http_task)
    finally:
        await app.aclose()
    if not started:
        raise OSError(f"the HTTP server could not start on {http_host}:{http_port}")


async def _started(server: uvicorn.Server, task: asyncio.Task[bool]) -> bool:
    """Wait until uvicorn listens (True) or has given up (False)."""
    while not server.started:
        if task.done():
            return False
        await asyncio.sleep(0.01)
    return True


class _Following:
    """`thanos.ThanosService` over whichever gateway `app` serves now: after a reload, new
    calls use the new gateway, and calls in flight keep theirs open until they end."""

    def __init__(self, app: Reloadable) -> None:
        self.app = app
        self._servicer: ThanosServicer | None = None

    def _over(self, gateway: Gateway) -> ThanosServicer:
        if self._servicer is None or self._servicer.gateway is not gateway:
            self._servicer = ThanosServicer(gateway)
        return self._servicer

    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatResponse]:
        with self.app.using() as gateway:
            messages = self._over(gateway).ChatCompletion(request, context)
            try:
                async for message in messages:
                    yield message
            finally:
                await getattr(messages, "aclose")()  # noqa: B009 - an async generator

    async def ListModels(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.ModelsResponse:
        with self.app.using() as gateway:
            return await self._over(gateway).ListModels(request, context)

    async def Health(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.HealthResponse:
        with self.app.using() as gateway:
            return await self._over(gateway).Health(request, context)

    async def InitiateOAuth(
        self, request: pb.OAuthRequest, context: grpc.aio.ServicerContext
    ) -> pb.OAuthResponse:
        with self.app.using() as gateway:
            return await self._over(gateway).InitiateOAuth(request, context)


async def _serve_http(server: uvicorn.Server) -> bool:
    """Run uvicorn; False when it could not start (it logs why and raises SystemExit)."""
    try:
        await server.serve()
    except SystemExit:
        return False
    return True


@contextlib.contextmanager
def _signals(
    server: uvicorn.Server,
    rpc: grpc.aio.Server,
    stopping: asyncio.Event,
    reload: Callable[[], object],
) -> Iterator[None]:
    """SIGINT/SIGTERM: stop gracefully; a second SIGINT: stop now (uvicorn's convention);
    SIGHUP: `reload`."""
    loop = asyncio.get_running_loop()
    forced: set[asyncio.Task[None]] = set()

    def stop(sig: signal.Signals) -> None:
        if stopping.is_set() and sig == signal.SIGINT:
            server.force_exit = True
            forced.add(loop.create_task(rpc.stop(None)))  # ends in-flight calls now
        server.should_exit = True
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    handled: list[int] = [signal.SIGINT, signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hangup is not None:
        loop.add_signal_handler(hangup, reload)
        handled.append(hangup)
    try:
        yield
    finally:
        for number in handled:
            loop.remove_signal_handler(number)
