"""`thanos auth login NAME`, `thanos auth status`, `thanos auth logout NAME`.

NAME is a provider instance that logs in (kind copilot, or `auth_method = "oauth"`), or
copilot / anthropic / anthropic_max. The CLI module reads the config the gateway reads and
hands over what each name logs in to (`LoginSetup`: its OAuth URLs, client id and token
folder), so the gateway finds the login where the command kept it: in the system keyring
when one is usable, else in the instance's `token_dir` (default `<data dir>/logins/`).
Flags given on the command line win over the config.
Login prompts go to `out` and the pasted Anthropic code is read from `stdin`, so both flows
can be driven by a script.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TextIO

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.logins import ANTHROPIC, COPILOT
from thanos_asgi.logins._claude import ClaudeAuth, ClaudeSettings
from thanos_asgi.logins._github import CopilotAuth, CopilotSettings
from thanos_asgi.logins._setup import LoginSetup
from thanos_asgi.logins._store import Token, TokenStore


def add_arguments(auth: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: the one serve would use)")
    actions = auth.add_subparsers(dest="action", required=True)
    login = actions.add_parser(
        "login",
        parents=[common],
        help="log in for a provider instance (or copilot, anthropic) and keep the login",
    )
    login.add_argument("name", help="an instance that logs in, or copilot / anthropic")
    login.add_argument("--enterprise", metavar="DOMAIN", help="GitHub Enterprise domain")
    login.add_argument("--github-url", help="GitHub web URL (device flow)")
    login.add_argument("--github-api-url", help="GitHub API URL (Copilot token exchange)")
    login.add_argument("--authorize-url", help="Anthropic OAuth authorize URL")
    login.add_argument("--token-url", help="Anthropic OAuth token URL")
    login.add_argument("--redirect-uri", help="Anthropic OAuth redirect URI")
    login.add_argument("--client-id", help="OAuth client id")
    actions.add_parser("status", parents=[common], help="show logins (never a token)")
    logout = actions.add_parser("logout", parents=[common], help="forget a login")
    logout.add_argument("name")


def run(
    args: argparse.Namespace,
    *,
    setups: Mapping[str, LoginSetup],
    stdin: TextIO,
    out: TextIO,
    err: TextIO | None = None,
) -> int:
    """`setups`: what each name logs in to, as the gateway's config says (`login_setups`)."""
    try:
        if args.action == "status":
            for setup in dict.fromkeys(setups.values()):  # aliases once
                store = setup.store()
                print(_describe(setup.name, store.load(setup.login), store), file=out)
            return 0
        setup = _chosen(setups, args.name)
        store = setup.store()
        if args.action == "login":
            token = asyncio.run(_login(setup, args, stdin, out))
            store.save(setup.login, token)
            print(f"logged in to {args.name} as {token.identity} ({store.kind} store)", file=out)
        else:
            store.delete(setup.login)
            print(f"logged out of {args.name}", file=out)
    except ThanosError as exc:
        print(f"thanos: {exc.message}", file=err or sys.stderr)
        return 1
    return 0


def _chosen(setups: Mapping[str, LoginSetup], name: str) -> LoginSetup:
    setup = setups.get(name)
    if setup is None:
        known = ", ".join(sorted(setups)) or "none"
        raise ThanosError(
            f"nothing logs in as '{name}': name a provider instance of kind copilot, or one "
            f'with auth_method = "oauth" (known here: {known})'
        )
    return setup


async def _login(setup: LoginSetup, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> Token:
    if isinstance(setup.settings, CopilotSettings):
        return await _copilot(setup.settings, args, out)
    return await _anthropic(setup.settings, args, stdin, out)


def _given(args: argparse.Namespace, **flags: str) -> dict[str, Any]:
    return {field: value for field, flag in flags.items() if (value := getattr(args, flag))}


async def _copilot(settings: CopilotSettings, args: argparse.Namespace, out: TextIO) -> Token:
    if args.enterprise:
        settings = CopilotSettings.enterprise(args.enterprise, client_id=settings.client_id)
    flags = _given(args, github_url="github_url", api_url="github_api_url", client_id="client_id")
    auth = CopilotAuth(replace(settings, **flags))
    try:
        code = await auth.device_code()
        print(f"Open {code.verification_uri} and enter the code {code.user_code}", file=out)
        print("Waiting for you to approve the login...", file=out, flush=True)
        return await auth.login(code)
    finally:
        await auth.aclose()


async def _anthropic(
    settings: ClaudeSettings, args: argparse.Namespace, stdin: TextIO, out: TextIO
) -> Token:
    flags = _given(
        args,
        authorize_url="authorize_url",
        token_url="token_url",
        redirect_uri="redirect_uri",
        client_id="client_id",
    )
    auth = ClaudeAuth(replace(settings, **flags))
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
