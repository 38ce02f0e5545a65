"""`GET /dashboard`: the web dashboard, plain files shipped in the package (no build step, no
CDN), served with a strict Content-Security-Policy: scripts, styles and connections from this
origin only, no inline script, no framing. Paths in the page are relative, so it works under
any mount point (`/ai/dashboard`)."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import NotFound
from thanos_asgi.frontends.asgi import Headers, respond, route_path

if TYPE_CHECKING:
    from thanos_asgi.frontends.app import Exchange

PATH = "/dashboard"
PREFIX = PATH + "/"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
SECURITY: Headers = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]
_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
}
ASSETS = ("app.js", "charts.js", "style.css")


@functools.cache
def _asset(name: str) -> bytes:
    return files("thanos_asgi.frontends.admin").joinpath("static", name).read_bytes()


async def _send(ex: Exchange, name: str) -> None:
    kind = _TYPES[name.rpartition(".")[2]]
    await respond(ex.send, 200, _asset(name), [(b"content-type", kind), *SECURITY])


async def page(ex: Exchange) -> None:
    """`GET /dashboard`: the single page (its views are `#overview`, `#requests`, ...)."""
    await _send(ex, "index.html")


async def asset(ex: Exchange) -> None:
    """`GET /dashboard/{file}`: the page's script and style sheet."""
    name = route_path(ex.scope)[len(PREFIX) :]
    if name not in ASSETS:
        raise NotFound(f"the dashboard has no file {name[:64]!r}")
    await _send(ex, name)
