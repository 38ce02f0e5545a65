"""The request half of the upstream HTTP/1.1 client: URLs into routes and targets, and the
request's bytes, checked so that nothing a caller passes can split or duplicate a header."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from thanos_asgi.exceptions import UpstreamConnectError
from thanos_asgi.upstream.h1._wire import Route

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field names and methods
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TARGET_SAFE = "/:@!$&'()*+,;=-._~%?"  # kept as they are; spaces and non-ASCII get %-encoded
_IDENTITY = b"accept-encoding: identity\r\n"  # encoded bodies are refused, never decoded

# What a caller's header name means here: send it, it replaces our Host, or leave it out
# (the framing and the encoding are the client's to set).
PLAIN, HOST, DROP = 0, 1, 2
_SPECIAL = {"host": HOST, "content-length": DROP, "transfer-encoding": DROP,
            "accept-encoding": DROP}  # fmt: skip


def parse_url(url: str) -> tuple[Route, bytes]:
    """(host, port, tls, the host header line), and the request target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UpstreamConnectError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamConnectError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    if _CONTROL.search(url):
        raise UpstreamConnectError("the URL holds a control character")
    tls = parts.scheme == "https"
    port = port or (443 if tls else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port != (443 if tls else 80):
        host = f"{host}:{port}"
    try:
        encoded = host.encode("ascii")
    except UnicodeEncodeError:
        encoded = host.encode("idna")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = quote(path, safe=_TARGET_SAFE, encoding="utf-8").encode("ascii")
    return (parts.hostname, port, tls, b"host: " + encoded + b"\r\n"), target


class RequestWriter:
    """Builds a request's bytes; remembers which header names it has checked already."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[str, int] = {}

    def build(
        self,
        method: str,
        target: bytes,
        host: bytes,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> bytes:
        """The request's bytes, to go out in one write; no content-length without a body."""
        head = [self._method(method), b" ", target, b" HTTP/1.1\r\n", host, _IDENTITY]
        names = self._names
        try:
            for name, value in headers.items():
                kind = names.get(name)
                if kind is None:
                    kind = self._check(name)
                if "\n" in value or "\r" in value or "\0" in value:
                    raise UpstreamConnectError(f"the header '{name}' holds a line break or a NUL")
                if kind:
                    if kind == DROP:
                        continue
                    head[4] = f"host: {value}\r\n".encode("latin-1")
                    continue
                head.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise UpstreamConnectError("a header holds characters HTTP/1.1 cannot carry") from None
        if body is None:
            head.append(b"\r\n")
            return b"".join(head)
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        head.append(body)
        return b"".join(head)

    def _check(self, name: str) -> int:
        if not _TOKEN.fullmatch(name):
            raise UpstreamConnectError(f"{name[:40]!r} is not a valid header name")
        kind = _SPECIAL.get(name.lower(), PLAIN)
        if len(self._names) < 1024:
            self._names[name] = kind
        return kind

    @staticmethod
    def _method(method: str) -> bytes:
        if method in ("POST", "GET"):
            return b"POST" if method == "POST" else b"GET"
        if not _TOKEN.fullmatch(method):
            raise UpstreamConnectError(f"{method[:20]!r} is not a valid HTTP method")
        return method.encode("ascii")
