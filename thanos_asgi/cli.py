"""The `thanos` command: serve, check and models. The only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thanos_asgi.exceptions import ConfigError
from thanos_asgi.frontends.stack import with_local_files
from thanos_asgi.governance.ledgers import LedgerUnavailable
from thanos_asgi.server.serve import (
    _workers_refusal as _workers_refusal,  # re-exported: tests import it here
)
from thanos_asgi.server.serve import serve as _serve
from thanos_asgi.server.serve import (
    worker_app as worker_app,  # re-exported: `thanos_asgi.cli:worker_app`
)

if TYPE_CHECKING:
    from thanos_asgi.config import Config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"thanos: invalid config: {exc}", file=sys.stderr)
        return 2
    except LedgerUnavailable as exc:
        print(f"thanos: {exc}", file=sys.stderr)
        return 1
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
    serve.add_argument("--pid-file", help="default: $XDG_DATA_HOME/thanos/thanos.pid")
    serve.set_defaults(run=_serve)
    _add_control(commands)

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


def _add_control(commands: Any) -> None:
    from thanos_asgi.server.control import add_arguments

    add_arguments(commands)
    init = commands.add_parser("init", help="write a commented starter config")
    init.add_argument("path", nargs="?", default="thanos.toml", help="default: ./thanos.toml")
    init.set_defaults(run=_init)


def _init(args: argparse.Namespace) -> int:
    from thanos_asgi.server.starter import write_starter

    path = Path(args.path)
    if not write_starter(path, os.environ):
        print(f"thanos: {path} exists; not writing over it", file=sys.stderr)
        return 1
    print(f"wrote {path}; `thanos check {path}` shows what it resolves to")
    return 0


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
    from thanos_asgi.logins._cli import add_arguments

    auth = commands.add_parser("auth", help="provider logins: GitHub Copilot, Claude Pro/Max")
    add_arguments(auth)
    auth.set_defaults(run=_auth)


def _auth(args: argparse.Namespace) -> int:
    """Logins as the gateway will look for them: the config's instances, URLs, token dirs."""
    from thanos_asgi.logins._cli import run
    from thanos_asgi.providers._login import login_setups

    config = with_local_files(_load(args.config), os.environ)
    setups = login_setups(config.providers.values(), str(_data_dir() / "logins"))
    return run(args, setups=setups, stdin=sys.stdin, out=sys.stdout)


def _add_usage(commands: Any) -> None:
    usage = commands.add_parser("usage", help="report spend from the usage ledger")
    usage.add_argument("--config")
    usage.add_argument("--by", choices=["day", "provider", "model", "key"], default="day")
    usage.add_argument(
        "--days",
        type=_non_negative,
        help="only today (0) or today and the N days before (UTC days, as --by day)",
    )
    usage.add_argument("--csv", action="store_true", help="every request as CSV")
    usage.set_defaults(run=_usage)


def _non_negative(text: str) -> int:
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {number})")
    return number


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {number})")
    return number


def _load(path: str | None) -> Config:
    from thanos_asgi.config import load_config
    from thanos_asgi.server.banner import with_catalogue

    return with_catalogue(load_config(path, env=os.environ))  # no file: catalogue models too


def _check(args: argparse.Namespace) -> int:
    from thanos_asgi.config import describe
    from thanos_asgi.core.payload import PayloadRules

    config = with_local_files(_load(args.file), os.environ)
    PayloadRules(config.payload, config.source)  # the range checks the gateway would make
    print(describe(config, stored_keys=_stored_keys(config.server.key_store)))
    return 0


def _stored_keys(path: str | None) -> int | None:
    """Active keys in the key store at `path`; None when there is none (never creates it)."""
    if not path or not Path(path).exists():
        return None
    from thanos_asgi.governance.keys import KeyStore

    store = KeyStore(path)
    try:
        return sum(1 for _ in store.active())
    finally:
        store.close()


def _models(args: argparse.Namespace) -> int:
    from thanos_asgi.core.gateway import Gateway

    async def listing() -> list[str]:
        async with Gateway(_load(args.config)) as gateway:
            return [model.id for model in await gateway.models(live=not args.offline)]

    for model_id in asyncio.run(listing()):
        print(model_id)
    return 0


def _keys(args: argparse.Namespace) -> int:
    from thanos_asgi.governance.keys import KeyStore

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
            print(_key_line(row))
    elif not store.revoke(args.id):
        print(f"thanos: no active key '{args.id}'", file=sys.stderr)
        return 1
    return 0


def _key_line(row: dict[str, Any]) -> str:
    """One `keys list` line: id, state, admin, limits (`-`: none), allow-lists (`*`: any)."""
    import json

    limits = [f"{name}={row[name] if row[name] is not None else '-'}" for name in ("rpm", "tpm")]
    budget = "-" if row["budget_usd"] is None else _money(row["budget_usd"])
    allowed = [
        f"{name}={','.join(json.loads(row[name])) or '*'}" for name in ("models", "providers")
    ]
    state = "revoked" if row["revoked"] else "active"
    return "\t".join(
        [row["id"], state, f"admin={bool(row['admin'])}", *limits, f"budget_usd={budget}", *allowed]
    )


def _usage(args: argparse.Namespace) -> int:
    from thanos_asgi.governance.ledgers import open_ledger

    config = with_local_files(_load(args.config), os.environ)
    path = config.cost.ledger_path
    if not config.ledger.url and (not path or not Path(path).exists()):
        print("thanos: no usage recorded yet", file=sys.stderr)
        return 1
    ledger = open_ledger(config, writer=False)
    assert ledger is not None
    since = None if args.days is None else _days_ago(args.days)
    if args.csv:
        ledger.to_csv(sys.stdout, since=since)
        return 0
    for row in ledger.report(group_by=args.by, since=since):
        row["cost_usd"] = _money(row["cost_usd"])
        print("\t".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _days_ago(days: int) -> float:
    """Unix time of the UTC midnight `days` days before today's."""
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=days)).timestamp()


def _money(usd: float) -> str:
    """Dollars to 4 significant digits, never fewer than cents: 0.00002640, 12.35, 1234.00."""
    rounded = float(f"{usd:.4g}")
    if not rounded:
        return "0.00"
    decimals = 3 - math.floor(math.log10(abs(rounded)))
    return f"{rounded:.{max(decimals, 2)}f}"


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "thanos"


if __name__ == "__main__":
    raise SystemExit(main())
