"""`thanos auth login copilot|anthropic`, `thanos auth status`, `thanos auth logout NAME`.

The CLI module reads the environment and hands over the data dir; logins are kept in the
system keyring when one is usable, else in `<data dir>/logins/` (see `default_store`).
Login prompts go to `out` and the pasted Anthropic code is read from `stdin`, so both flows
can be driven by a script.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.logins import ANTHROPIC, COPILOT, LOGINS
from thanos_asgi.logins._claude import ClaudeAuth, ClaudeSettings
from thanos_asgi.logins._github import CopilotAuth, CopilotSettings
from thanos_asgi.logins._store import Token, TokenStore, default_store


def add_arguments(auth: argparse.ArgumentParser) -> None:
    actions = auth.add_subparsers(dest="action", required=True)
    login = actions.add_parser("login", help="log in to a provider and keep the login")
    login.add_argument("name", choices=LOGINS)
    login.add_argument("--enterprise", metavar="DOMAIN", help="GitHub Enterprise domain")
    login.add_argument("--github-url", help="GitHub web URL (device flow)")
    login.add_argument("--github-api-url", help="GitHub API URL (Copilot token exchange)")
    login.add_argument("--authorize-url", help="Anthropic OAuth authorize URL")
    login.add_argument("--token-url", help="Anthropic OAuth token URL")
    login.add_argument("--redirect-uri", help="Anthropic OAuth redirect URI")
    login.add_argument("--client-id", help="OAuth client id")
    actions.add_parser("status", help="show logins (never a token)")
    logout = actions.add_parser("logout", help="forget a login")
    logout.add_argument("name", choices=LOGINS)


def run(
    args: argparse.Namespace,
    *,
    data_dir: Path,
    stdin: TextIO,
    out: TextIO,
    err: TextIO | None = None,
) -> int:
    store = default_store(data_dir / "logins")
    try:
        if args.action == "login":
            token = asyncio.run(_login(args, stdin, out))
            store.save(args.name, token)
            print(f"logged in to {args.name} as {token.identity} ({store.kind} store)", file=out)
        elif args.action == "status":
            for name in LOGINS:
                print(_describe(name, store.load(name), store), file=out)
        else:
            store.delete(args.name)
            print(f"logged out of {args.name}", file=out)
    except ThanosError as exc:
        print(f"thanos: {exc.message}", file=err or sys.stderr)
        return 1
    return 0


async def _login(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> Token:
    if args.name == COPILOT:
        return await _copilot(args, out)
    return await _anthropic(args, stdin, out)


def _given(args: argparse.Namespace, **flags: str) -> dict[str, Any]:
    return {field: value for field, flag in flags.items() if (value := getattr(args, flag))}


async def _copilot(args: argparse.Namespace, out: TextIO) -> Token:
    base = CopilotSettings.enterprise(args.enterprise) if args.enterprise else CopilotSettings()
    flags = _given(args, github_url="github_url", api_url="github_api_url", client_id="client_id")
    auth = CopilotAuth(replace(base, **flags))
    try:
        code = await auth.device_code()
        print(f"Open {code.verification_uri} and enter the code {code.user_code}", file=out)
        print("Waiting for you to approve the login...", file=out, flush=True)
        return await auth.login(code)
    finally:
        await auth.aclose()


async def _anthropic(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> Token:
    flags = _given(
        args,
        authorize_url="authorize_url",
        token_url="token_url",
        redirect_uri="redirect_uri",
        client_id="client_id",
    )
    auth = ClaudeAuth(ClaudeSettings(**flags))
    try:
        pending = auth.authorize()
        print("Open this URL, approve, then paste the code shown (code#state):", file=out)
        print(pending.url, file=out, flush=True)
        pasted = await asyncio.to_thread(stdin.readline)
        return await auth.exchange(pending, pasted)
    finally:
        await auth.aclose()


def _describe(name: str, token: Token | None, store: TokenStore) -> str:
    if token is None:
        return f"{name}\tnot logged in"
    expiry = "no expiry"
    if token.expires_at is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.expires_at))
        expiry = f"access token expires {stamp} (renewed automatically)"
    return f"{name}\tlogged in as {token.identity}\t{expiry}\t{store.kind} store"


__all__ = ["ANTHROPIC", "COPILOT", "add_arguments", "run"]
