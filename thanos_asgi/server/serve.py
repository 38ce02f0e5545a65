"""`thanos serve`: one process, N worker processes (`--workers`), or HTTP beside gRPC.

Part of the command line (`cli.py` parses the arguments), so it reads the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import os
import sys
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thanos_asgi.exceptions import ConfigError
from thanos_asgi.frontends.stack import with_local_files

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from thanos_asgi.config import Config
    from thanos_asgi.frontends.asgi import ASGIApp
    from thanos_asgi.frontends.stack import Reloadable
    from thanos_asgi.server.lifecycle import Lifecycle

_log = logging.getLogger("thanos_asgi.serve")
_WORKER_SETTINGS = "THANOS_SERVE_WORKER"  # what `thanos serve --workers` tells its workers
YOUNG_GC_THRESHOLD = 100_000  # net allocations between young collections (`_tune_gc`)


def _load(path: str | None) -> Config:
    """The config `thanos serve` runs: the file (or the environment's defaults, with their
    catalogue models), the environment and the local files."""
    from thanos_asgi.config import load_config
    from thanos_asgi.server.banner import with_catalogue

    return with_local_files(with_catalogue(load_config(path, env=os.environ)), os.environ)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    from thanos_asgi.server.logs import configure_logging
    from thanos_asgi.server.pidfile import PidFile, default_pid_path

    configure_logging(args.log_level, args.log_format)
    config = _load(args.config)
    host = args.host or config.server.host
    port = args.port or config.server.port
    allowed = args.allow_unauthenticated or config.server.allow_unauthenticated
    if not _is_loopback(host) and not config.server.keys and not allowed:
        print(
            f"thanos: refusing to serve {host}:{port} without client keys; add [[server.keys]] "
            "or pass --allow-unauthenticated",
            file=sys.stderr,
        )
        return 2
    options = _uvicorn_options(args, _tls_files(config))
    pid_file = PidFile(Path(args.pid_file) if args.pid_file else default_pid_path(os.environ))
    other = pid_file.acquire()
    if other is not None and args.pid_file:
        print(f"thanos: a gateway already runs (pid {other}, {args.pid_file})", file=sys.stderr)
        return 2
    if other is not None:  # another gateway on this machine: both serve, it keeps the file
        _log.warning(
            "another gateway (pid %d) holds %s; `thanos status|stop|reload` find that one "
            "(give this one its own --pid-file)",
            other,
            pid_file.path,
        )
    try:
        workers = args.workers or config.server.workers
        if workers > 1:
            return _serve_workers(args, config, (host, port), workers, options)
        return _serve_one(args, config, (host, port), options, allowed)
    finally:
        pid_file.release()


def _uvicorn_options(args: argparse.Namespace, tls: tuple[str, str] | None) -> dict[str, Any]:
    from thanos_asgi.server.held import HeldHttpToolsProtocol

    options = {
        "loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "http": HeldHttpToolsProtocol,  # httptools, one write per loop turn (held.py)
        "log_level": args.log_level,
        "server_header": False,
        "log_config": None,  # configure_logging's handler, JSON or text
        "access_log": False,  # AccessLogMiddleware writes one line per request instead
        "timeout_graceful_shutdown": args.drain_seconds,  # SIGTERM: drain, then cancel
    }
    if tls is not None:
        options.update(ssl_certfile=tls[0], ssl_keyfile=tls[1])
    return options


def _tls_files(config: Config) -> tuple[str, str] | None:
    """`[server] tls_cert` and `tls_key`, checked to load as a pair; ConfigError if not."""
    import ssl

    cert, key = config.server.tls_cert, config.server.tls_key
    if cert is None or key is None:
        return None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:
        name = exc.filename or cert
        raise ConfigError(f"cannot read {name}: {exc.strerror}", source=config.source) from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls_cert and tls_key do not load as a certificate and its key ({exc.reason})",
            source=config.source,
            path="server",
        ) from None
    return cert, key


def _serve_one(
    args: argparse.Namespace,
    config: Config,
    bind: tuple[str, int],
    options: dict[str, Any],
    allowed: bool,
) -> int:
    """One process: HTTP, and gRPC beside it when `[server] grpc` is set."""
    import uvicorn

    from thanos_asgi.core.gateway import Gateway
    from thanos_asgi.frontends.stack import Reloadable
    from thanos_asgi.server.lifecycle import HttpServer, Lifecycle, serve_http
    from thanos_asgi.server.notify import Notifier

    reloaded = partial(_reload_config, args.config, bind[0], args.allow_unauthenticated)
    app = Reloadable(reloaded, gateway=Gateway(config), grace=args.drain_seconds)
    watched = Path(config.source) if config.server.watch_config and _from_file(config) else None
    life = Lifecycle(app, Notifier(os.environ), watched=watched)
    _log_banner(app, bind, config.server.grpc, options)
    if config.server.grpc is not None:
        return _serve_with_grpc(app, life, bind, config.server.grpc, options, allowed)
    _tune_gc()
    server = HttpServer(uvicorn.Config(app, host=bind[0], port=bind[1], lifespan="on", **options))
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_http(server, life))
    if not server.started:
        return 1  # uvicorn logged why
    return 0


def _from_file(config: Config) -> bool:
    from thanos_asgi.config.defaults import DEFAULTS_SOURCE

    return config.source != DEFAULTS_SOURCE


def _log_banner(
    app: Reloadable, bind: tuple[str, int], grpc: str | None, options: dict[str, Any]
) -> None:
    from thanos_asgi.config import config_paths
    from thanos_asgi.server.banner import banner, count_keys, self_loops

    tls = "ssl_certfile" in options
    host = f"[{bind[0]}]" if ":" in bind[0] else bind[0]
    urls = [f"{'https' if tls else 'http'}://{host}:{bind[1]}"]
    urls.append(f"{'grpcs' if tls else 'grpc'}://{grpc}" if grpc else "gRPC off")
    config = app.gateway.config
    lines = banner(
        config,
        app.gateway.router,
        looked_in=config_paths(os.environ),
        urls=urls,
        client_keys=count_keys(config),
    )
    for line in lines:
        _log.info("%s", line)
    for warning in self_loops(config, bind):
        _log.warning("%s", warning)


def _reload_config(path: str | None, host: str, allow_unauthenticated: bool) -> Config:
    """The config a SIGHUP (or a new worker) loads; the bind stays, and so does its key rule."""
    fresh = _load(path)
    server = fresh.server
    open_ok = allow_unauthenticated or server.allow_unauthenticated
    if not (_is_loopback(host) or server.keys or open_ok):
        raise ConfigError(f"no client keys, and {host} is not a loopback address")
    return fresh


def _serve_workers(
    args: argparse.Namespace,
    config: Config,
    bind: tuple[str, int],
    workers: int,
    options: dict[str, Any],
) -> int:
    """N uvicorn worker processes on one socket; each builds its own gateway (`worker_app`).

    uvicorn's supervisor (the parent) binds the socket, starts the workers and restarts any
    that dies; SIGTERM/SIGINT stop them all (each drains for --drain-seconds); SIGHUP replaces
    them one at a time, each new one reading the config file afresh (a worker that fails to
    start - a bad config - stops the replacing and the old workers keep serving).
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    refusal = _workers_refusal(config)
    if refusal:
        print(f"thanos: cannot serve with {workers} workers: {refusal}", file=sys.stderr)
        return 2
    path = args.config and str(Path(args.config).resolve())
    os.environ[_WORKER_SETTINGS] = json.dumps(  # spawned workers inherit the environment
        {
            "config": path,
            "host": bind[0],
            "allow_unauthenticated": args.allow_unauthenticated,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "drain_seconds": args.drain_seconds,
        }
    )
    server = uvicorn.Config(
        f"{__name__}:worker_app",
        factory=True,
        host=bind[0],
        port=bind[1],
        lifespan="on",
        workers=workers,
        **options,
    )
    supervisor = Multiprocess(server, sockets=[server.bind_socket()])
    supervisor.run()
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return 1 if failed else 0


def _workers_refusal(config: Config) -> str | None:
    """Why `config` cannot be served by several processes, or None."""
    if config.server.grpc is not None:
        return (
            "[server] grpc runs in the one process beside HTTP and every worker would bind its "
            "port; serve gRPC from a `thanos serve` with one worker, or remove [server] grpc"
        )
    if config.state.backend != "memory":
        return None
    limits = _limits(config)
    if not limits:
        return None
    return (
        f'with [state] backend = "memory" every worker counts on its own, so each of these '
        f"would allow N times its limit: {', '.join(limits)}; set [state] backend = "
        '"redis" and url, or serve with one worker'
    )


def _limits(config: Config) -> list[str]:
    """Every configured limit or budget that lives in the state backend."""
    server, cost = config.server, config.cost
    found = ["server.rpm_per_ip"] if server.rpm_per_ip else []
    for key in server.keys:
        found += [
            f"key {key.id} {name}"
            for name in ("rpm", "tpm", "budget_usd")
            if getattr(key, name) is not None
        ]
    found += [
        f"providers.{name}.rate_limit_rpm"
        for name, p in config.providers.items()
        if p.rate_limit_rpm
    ]
    if cost.monthly_budget_usd is not None:
        found.append("cost.monthly_budget_usd")
    found += [
        f"cost.providers.{name}.monthly_budget_usd"
        for name, p in cost.providers.items()
        if p.monthly_budget_usd is not None
    ]
    if server.key_store and Path(server.key_store).exists():
        from thanos_asgi.governance.keys import KeyStore

        for row in KeyStore(server.key_store).listing():
            if not row["revoked"] and (row["rpm"] or row["tpm"] or row["budget_usd"] is not None):
                found.append(f"stored key {row['id']}")
    return found


def _tune_gc() -> None:
    """Keep what startup made (config, price table, adapters, imported modules) out of every
    later garbage collection, and collect the young generation every 100,000 net allocations
    instead of every 700. A request, answered or failed, leaves no reference cycles
    (tests/test_garbage.py, tests/test_garbage_failures.py), so what it allocates is freed by
    reference counting and a collection finds ~nothing: at the default threshold a saturated
    gateway still ran one every ~11 requests, ~6% of its CPU.

    Why not 10,000: the count is net, but a collection resets it to 0 while the open requests'
    objects live on, and their frees are not counted below 0. Once the open requests hold more
    objects than the threshold (64 stored Responses streams do), every turnover of them
    collects them all: one pass of ~1 ms every ~60 streams, ~5% of the CPU, finding nothing.
    100,000 keeps that regime to ~600 open streams or more. Cycles a request does not make
    (a library's) wait for at most that many allocations. The process is ours, so this global
    step is ours to take; a host app that mounts the gateway keeps its own settings."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def worker_app() -> ASGIApp:
    """The app of one `thanos serve --workers N` worker: uvicorn calls this in each worker.

    It reads the config file as `thanos serve` would (the path and flags come from the
    parent, in the environment), builds its own gateway when the server starts (a bad config
    fails the worker's startup, which uvicorn reports), and reloads on SIGHUP sent to it.
    """
    import signal

    from thanos_asgi.frontends.stack import LazyApp, Reloadable
    from thanos_asgi.server.logs import configure_logging

    _tune_gc()  # (what the worker builds at startup stays in the young generations)
    settings = json.loads(os.environ[_WORKER_SETTINGS])
    configure_logging(settings["log_level"], settings["log_format"])
    load = partial(
        _reload_config, settings["config"], settings["host"], settings["allow_unauthenticated"]
    )
    grace, hangup = settings["drain_seconds"], getattr(signal, "SIGHUP", None)
    return LazyApp(lambda: Reloadable(load, grace=grace, reload_signal=hangup))


def _serve_with_grpc(
    app: Reloadable,
    life: Lifecycle,
    http: tuple[str, int],
    address: str,
    options: dict[str, Any],
    allowed: bool,
) -> int:
    """HTTP and gRPC in one process and one event loop (`[server] grpc`)."""
    import uvicorn

    from thanos_asgi.config import split_host_port

    config = app.gateway.config
    if not (allowed or config.server.keys or _is_loopback(split_host_port(address)[0])):
        print(
            f"thanos: refusing to serve gRPC on {address} without client keys; add "
            "[[server.keys]] or pass --allow-unauthenticated",
            file=sys.stderr,
        )
        return 2
    try:
        from thanos_asgi.grpc.server import serve_both
    except ImportError as exc:
        print(
            f"thanos: [server] grpc is set, but gRPC support is not installed ({exc}); "
            "install it with: pip install 'thanos-asgi[grpc]'",
            file=sys.stderr,
        )
        return 2
    tls = None
    if "ssl_certfile" in options:
        tls = (
            Path(options["ssl_certfile"]).read_bytes(),
            Path(options["ssl_keyfile"]).read_bytes(),
        )
    both = partial(serve_both, tls=tls, grace=app.grace, ready=life.ready, reload=life.reload)
    _tune_gc()
    with asyncio.Runner(loop_factory=uvicorn.Config(app, **options).get_loop_factory()) as run:
        try:
            run.run(_until_closed(both(app, *http, address, **options), life))
        except OSError as exc:
            print(f"thanos: {exc}", file=sys.stderr)
            return 1
    return 0


async def _until_closed(serving: Awaitable[None], life: Lifecycle) -> None:
    try:
        await serving
    finally:
        await life.aclose()
