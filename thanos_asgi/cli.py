"""The `thanos` command: serve, check and models. The only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import Sequence
from importlib.util import find_spec
from typing import TYPE_CHECKING

from .exceptions import ConfigError

if TYPE_CHECKING:
    from .config import Config


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
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate a config and show what it resolves to")
    check.add_argument("file", nargs="?", help="config file (default: the one serve would use)")
    check.set_defaults(run=_check)

    models = commands.add_parser("models", help="list the models the gateway serves")
    models.add_argument("--config")
    models.add_argument("--offline", action="store_true", help="only what the config names")
    models.set_defaults(run=_models)
    return parser


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
    import uvicorn

    from .gateway import Gateway
    from .stack import build_app

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
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(Gateway(config)),
            host=host,
            port=port,
            loop="uvloop" if find_spec("uvloop") else "asyncio",
            http="httptools" if find_spec("httptools") else "h11",
            lifespan="on",
            log_level=args.log_level,
            server_header=False,
        )
    )
    server.run()
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


if __name__ == "__main__":
    raise SystemExit(main())
