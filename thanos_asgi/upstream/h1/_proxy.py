"""Reaching a provider through a proxy: an HTTP CONNECT tunnel (to an `http://` or, over TLS,
an `https://` proxy), or SOCKS5 through python-socks (`pip install 'thanos-asgi[socks]'`).

The tunnel only changes how the socket is made; everything above it (TLS to the provider with
its own certificate check, the request, the response and all its limits) is the same as on a
direct connection. The proxy's credentials (`http://user:pass@proxy:3128`) go to the proxy
alone, and never into an error message.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

from thanos_asgi.exceptions import ConfigError, UpstreamConnectError
from thanos_asgi.upstream.h1._wire import Connection, Route

SCHEMES = ("http", "https", "socks5", "socks5h")


class Proxy:
    """One proxy, parsed once; `open` makes a connection to a route through it."""

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError("the proxy is not a valid URL") from None
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ConfigError(f"a proxy is http://, https:// or socks5:// (got {parts.scheme}://)")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = port or {"http": 80, "https": 443}.get(parts.scheme, 1080)
        self.label = f"{parts.scheme}://{self.host}:{self.port}"  # for messages: no credentials
        self._auth = b""
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = b"proxy-authorization: Basic " + base64.b64encode(user.encode()) + b"\r\n"
        self._socks: Any = _socks(url) if parts.scheme.startswith("socks") else None

    async def open(self, route: Route, context: ssl.SSLContext | None) -> Connection:
        """A connection to `route` through the proxy, TLS to the provider included."""
        try:
            if self._socks is not None:
                return await self._through_socks(route, context)
            return await self._through_connect(route, context)
        except (ssl.SSLError, OSError, UpstreamConnectError):
            raise
        except Exception as exc:  # python-socks' own errors
            raise UpstreamConnectError(f"could not connect through {self.label}: {exc}") from None

    async def _through_socks(self, route: Route, context: ssl.SSLContext | None) -> Connection:
        host, port, tls, _ = route
        sock = await self._socks.connect(dest_host=host, dest_port=port)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: Connection(route, loop), sock=sock, ssl=context,
            server_hostname=host if tls else None,
        )  # fmt: skip
        return conn

    async def _through_connect(self, route: Route, context: ssl.SSLContext | None) -> Connection:
        host, port, tls, _ = route
        loop = asyncio.get_running_loop()
        to_proxy = None
        if self.scheme == "https":
            to_proxy = context or ssl.create_default_context()
        transport, conn = await loop.create_connection(
            lambda: Connection(route, loop), self.host, self.port, ssl=to_proxy
        )
        authority = (f"[{host}]" if ":" in host else host).encode("idna") + b":%d" % port
        conn.begin(bodiless=True, tunnel=True)  # the answer to CONNECT has no body
        transport.write(
            b"CONNECT %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (authority, authority, self._auth)
        )
        while not conn.headed:
            if conn.error is not None:
                raise UpstreamConnectError(f"{self.label} did not open a tunnel: {conn.error}")
            await conn.wait(None)  # (the caller's connect timeout covers this)
        if not 200 <= conn.status < 300:
            transport.close()
            raise UpstreamConnectError(f"{self.label} refused the tunnel (answer {conn.status})")
        if tls:
            assert context is not None
            conn.transport = await loop.start_tls(transport, conn, context, server_hostname=host)
        conn.begin()
        return conn


def _socks(url: str) -> Any:
    try:
        from python_socks.async_.asyncio import Proxy as SocksProxy
    except ImportError:
        raise ConfigError(
            "a socks5:// proxy needs python-socks: pip install 'thanos-asgi[socks]'"
        ) from None
    remote = url.startswith("socks5h:")  # the proxy resolves the name (curl's meaning)
    return SocksProxy.from_url("socks5:" + url.split(":", 1)[1], rdns=remote)
