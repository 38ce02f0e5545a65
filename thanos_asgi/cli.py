"""The `thanos` command: serve, check and models. The only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigError
from .stack import with_local_files

if TYPE_CHECKING:
    from ._http import ASGIApp
    from .config import Config
    from .gateway import Gateway


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"thanos: invalid config: {exc}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thanos", description="A universal AI gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config file (default: THANOS_CONFIG, ./thanos.toml, ...)")
    serve.add_argument("--host", help="address to bind (default from [server] bind)")
    serve.add_argument("--port", type=int, help="port to bind (default from [server] bind)")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow binding a non-loopback address without client keys",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.add_argument("--drain-seconds", type=float, default=30.0, help="on SIGTERM (default 30)")
    serve.add_argument(
        "--workers",
        type=_positive,
        help="worker processes (default from [server] workers, 1); see README, 'Operate it'",
    )
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate a config and show what it resolves to")
    check.add_argument("file", nargs="?", help="config file (default: the one serve would use)")
    check.set_defaults(run=_check)

    models = commands.add_parser("models", help="list the models the gateway serves")
    models.add_argument("--config")
    models.add_argument("--offline", action="store_true", help="only what the config names")
    models.set_defaults(run=_models)
    _add_keys(commands)
    _add_auth(commands)
    _add_usage(commands)
    return parser


def _add_keys(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage client keys (stored hashed)")
    keys.add_argument("--config")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("id")
    create.add_argument("--model", action="append", default=[], dest="models")
    create.add_argument("--provider", action="append", default=[], dest="providers")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--budget-usd", type=float)
    create.add_argument("--admin", action="store_true")
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id")
    keys.set_defaults(run=_keys)


def _add_auth(commands: Any) -> None:
    from .logins._cli import add_arguments

    auth = commands.add_parser("auth", help="provider logins: GitHub Copilot, Claude Pro/Max")
    add_arguments(auth)
    auth.set_defaults(run=_auth)


def _auth(args: argparse.Namespace) -> int:
    from .logins._cli import run

    return run(args, data_dir=_data_dir(), stdin=sys.stdin, out=sys.stdout)


def _add_usage(commands: Any) -> None:
    usage = commands.add_parser("usage", help="report spend from the usage ledger")
    usage.add_argument("--config")
    usage.add_argument("--by", choices=["day", "provider", "model", "key"], default="day")
    usage.add_argument("--days", type=float, help="only the last N days")
    usage.add_argument("--csv", action="store_true", help="every request as CSV")
    usage.set_defaults(run=_usage)


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {number})")
    return number


def _load(path: str | None) -> Config:
    from .config import load_config

    return load_config(path, env=os.environ)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import signal

    import uvicorn

    from ._logging import configure_logging
    from .gateway import Gateway
    from .stack import Reloadable, build_app

    configure_logging(args.log_level, args.log_format)
    config = with_local_files(_load(args.config), os.environ)
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
    options = {
        "loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "http": "httptools" if find_spec("httptools") else "h11",
        "log_level": args.log_level,
        "server_header": False,
        "log_config": None,  # configure_logging's handler, JSON or text
        "access_log": False,  # AccessLogMiddleware writes one line per request instead
        "timeout_graceful_shutdown": args.drain_seconds,  # SIGTERM: drain, then cancel
    }
    workers = args.workers or config.server.workers
    if workers > 1:
        return _serve_workers(args, config, (host, port), workers, options)
    gateway = Gateway(config)
    if config.server.grpc is not None:
        app = build_app(gateway)
        return _serve_with_grpc(app, gateway, (host, port), config.server.grpc, options, allowed)

    reloaded = partial(_reload_config, args.config, host, args.allow_unauthenticated)
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    app = Reloadable(reloaded, gateway=gateway, grace=args.drain_seconds, reload_signal=hangup)
    _freeze_startup_objects()
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on", **options)).run()
    return 0


def _reload_config(path: str | None, host: str, allow_unauthenticated: bool) -> Config:
    """The config a SIGHUP (or a new worker) loads; the bind stays, and so does its key rule."""
    fresh = with_local_files(_load(path), os.environ)
    server = fresh.server
    open_ok = allow_unauthenticated or server.allow_unauthenticated
    if not (_is_loopback(host) or server.keys or open_ok):
        raise ConfigError(f"no client keys, and {host} is not a loopback address")
    return fresh


_WORKER_SETTINGS = "THANOS_SERVE_WORKER"  # what `thanos serve --workers` tells its workers


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
        from .keys import KeyStore

        for row in KeyStore(server.key_store).listing():
            if not row["revoked"] and (row["rpm"] or row["tpm"] or row["budget_usd"] is not None):
                found.append(f"stored key {row['id']}")
    return found


def _freeze_startup_objects() -> None:
    """Keep what startup made (config, price table, adapters, imported modules) out of every
    later garbage collection: requests allocate enough to trigger many, and each old-generation
    pass would walk all of it again. The process is ours, so this global step is ours to take."""
    gc.collect()
    gc.freeze()


def worker_app() -> ASGIApp:
    """The app of one `thanos serve --workers N` worker: uvicorn calls this in each worker.

    It reads the config file as `thanos serve` would (the path and flags come from the
    parent, in the environment), builds its own gateway when the server starts (a bad config
    fails the worker's startup, which uvicorn reports), and reloads on SIGHUP sent to it.
    """
    import signal

    from ._logging import configure_logging
    from .stack import LazyApp, Reloadable

    settings = json.loads(os.environ[_WORKER_SETTINGS])
    configure_logging(settings["log_level"], settings["log_format"])
    load = partial(
        _reload_config, settings["config"], settings["host"], settings["allow_unauthenticated"]
    )
    grace, hangup = settings["drain_seconds"], getattr(signal, "SIGHUP", None)
    return LazyApp(lambda: Reloadable(load, grace=grace, reload_signal=hangup))


def _serve_with_grpc(
    app: ASGIApp,
    gateway: Gateway,
    http: tuple[str, int],
    address: str,
    options: dict[str, Any],
    allowed: bool,
) -> int:
    """HTTP and gRPC in one process and one event loop (`[server] grpc`)."""
    import uvicorn

    from .config import split_host_port

    if not (allowed or gateway.config.server.keys or _is_loopback(split_host_port(address)[0])):
        print(
            f"thanos: refusing to serve gRPC on {address} without client keys; add "
            "[[server.keys]] or pass --allow-unauthenticated",
            file=sys.stderr,
        )
        return 2
    try:
        from .grpc.server import serve_both
    except ImportError as exc:
        print(
            f"thanos: [server] grpc is set, but gRPC support is not installed ({exc}); "
            "install it with: pip install 'thanos-asgi[grpc]'",
            file=sys.stderr,
        )
        return 2
    _freeze_startup_objects()
    with asyncio.Runner(loop_factory=uvicorn.Config(app, **options).get_loop_factory()) as run:
        try:
            run.run(serve_both(app, gateway, *http, address, **options))
        except OSError as exc:
            print(f"thanos: {exc}", file=sys.stderr)
            return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from .config import describe

    print(describe(_load(args.file)))
    return 0


def _models(args: argparse.Namespace) -> int:
    from .gateway import Gateway

    async def listing() -> list[str]:
        async with Gateway(_load(args.config)) as gateway:
            return [model.id for model in await gateway.models(live=not args.offline)]

    for model_id in asyncio.run(listing()):
        print(model_id)
    return 0


def _keys(args: argparse.Namespace) -> int:
    from .keys import KeyStore

    config = with_local_files(_load(args.config), os.environ)
    path = config.server.key_store or str(_data_dir() / "keys.db")
    store = KeyStore(path)
    if args.action == "create":
        secret = store.create(
            args.id,
            models=args.models,
            providers=args.providers,
            rpm=args.rpm,
            tpm=args.tpm,
            budget_usd=args.budget_usd,
            admin=args.admin,
        )
        print(secret)
        print(f"created key '{args.id}'; this is the only time it is shown", file=sys.stderr)
    elif args.action == "list":
        for row in store.listing():
            state = "revoked" if row["revoked"] else "active"
            print(
                f"{row['id']}\t{state}\tadmin={bool(row['admin'])}\trpm={row['rpm']}\t"
                f"tpm={row['tpm']}\tbudget_usd={row['budget_usd']}"
            )
    elif not store.revoke(args.id):
        print(f"thanos: no active key '{args.id}'", file=sys.stderr)
        return 1
    return 0


def _usage(args: argparse.Namespace) -> int:
    import time

    from .ledger import Ledger

    config = with_local_files(_load(args.config), os.environ)
    if not config.cost.ledger_path or not Path(config.cost.ledger_path).exists():
        print("thanos: no usage recorded yet", file=sys.stderr)
        return 1
    ledger = Ledger(config.cost.ledger_path)
    since = time.time() - args.days * 86400 if args.days else None
    if args.csv:
        ledger.to_csv(sys.stdout, since=since)
        return 0
    for row in ledger.report(group_by=args.by, since=since):
        print("\t".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "thanos"


if __name__ == "__main__":
    raise SystemExit(main())
