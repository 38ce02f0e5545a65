"""Untrusted text and JSON made safe to read, store and echo: one home for every bound.

Clients and providers are both untrusted (DESIGN section 8). What they send is read through
these few helpers:

- `Decoder`: msgspec's JSON decoder behind a nesting check. msgspec has no depth option and
  recurses until Python's recursion limit (~980 levels), raising RecursionError; `Decoder`
  refuses JSON nested deeper than `MAX_DEPTH` first, with `NestingTooDeep`, a
  `msgspec.DecodeError`, so every `except msgspec.DecodeError` already handles it: a client's
  body becomes a 400, a provider's answer a 502 (or a final error event).
- `check_model_name`: at most `MAX_MODEL_BYTES` of UTF-8 and printable, else a 400.
- `echo`: at most `MAX_ECHO` characters of client input inside a message.
- `url_path`: a model name as URL path segments, percent-encoded, no `.`/`..` segments.
- `header_value`: any text as a safe HTTP header value (printable ASCII, the rest
  percent-encoded, at most `MAX_HEADER_CHARS`).
- `scrub`: a secret removed from text in its plain, case-changed, split and base64 forms.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Generic, TypeVar, overload
from urllib.parse import quote

import msgspec

from thanos_asgi.exceptions import InvalidRequest

__all__ = [
    "MAX_DEPTH",
    "MAX_ECHO",
    "MAX_HEADER_CHARS",
    "MAX_MODEL_BYTES",
    "Decoder",
    "NestingTooDeep",
    "check_depth",
    "check_model_name",
    "echo",
    "header_value",
    "lines_within",
    "openers",
    "scrub",
    "url_path",
]

T = TypeVar("T")

MAX_DEPTH = 128  # JSON nesting levels, arrays and objects together
MAX_MODEL_BYTES = 256  # a model name, in UTF-8
MAX_ECHO = 200  # characters of client input quoted back in an error message
MAX_HEADER_CHARS = 256  # a provider-given value in a response header

# -- JSON nesting --------------------------------------------------------------------------------

_KEEP = b'[]{}"'
_DELETE = bytes(byte for byte in range(256) if byte not in _KEEP)
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")


class NestingTooDeep(msgspec.DecodeError):
    """JSON nested deeper than the limit: refused before msgspec recurses into it."""


JSONText = bytes | bytearray | memoryview | str | msgspec.Raw


def check_depth(data: JSONText, limit: int = MAX_DEPTH) -> None:
    """Raise NestingTooDeep if `data` (JSON text) nests arrays/objects deeper than `limit`.

    At C speed, no per-byte Python loop: JSON with at most `limit` openers cannot nest
    deeper (one `count` each); otherwise escapes are dropped, the text is reduced to its
    brackets and quotes (`translate`), strings are cut out, and innermost `()` pairs are
    removed one level per `replace` pass, at most `limit` passes. Unbalanced input counts
    its unclosed openers as levels, as msgspec would recurse into them.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = data if isinstance(data, bytes) else bytes(memoryview(data))
    if openers(raw) <= limit:
        return
    if b'\\"' in raw:  # escaped quotes end no string (escaped backslashes go first)
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = raw.translate(_BRACKETS, _DELETE).replace(b'""', b"")  # strings without brackets
    if b'"' in kept:  # what is left between quotes sits inside strings
        kept = b"".join(kept.split(b'"')[::2])
    for level in range(limit + 1):
        shorter = kept.replace(b"()", b"")
        if len(shorter) == len(kept):  # balanced pairs gone: unclosed `(` remain as levels
            if level + shorter.count(b"(") <= limit:
                return
            break
        kept = shorter
    raise NestingTooDeep(f"JSON nested deeper than {limit} levels")


def openers(data: bytes) -> int:
    """How many arrays and objects `data` opens: no JSON in it nests deeper than this. One
    pass (`translate` keeping only `[` and `{`): a third less time than a `count` of each
    over a 5.7 KB read, a seventh over a 262-byte chunk (timeit, CPython 3.11)."""
    return len(data.translate(None, _NOT_OPENERS))


_NOT_OPENERS = bytes(byte for byte in range(256) if byte not in b"[{")


def lines_within(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether no line of `data` opens more than `limit` arrays and objects: then no JSON value
    that lies on one line nests deeper. One `translate` (keeping `[`, `{` and line ends) for
    all the lines, not one per value (`translate` builds a 256-entry table on every call);
    the lines are counted apart only when all of them together open more than `limit`."""
    kept = data.translate(None, _NOT_OPENERS_NOR_LF)
    return len(kept) - kept.count(b"\n") <= limit or max(map(len, kept.split(b"\n"))) <= limit


_NOT_OPENERS_NOR_LF = bytes(byte for byte in range(256) if byte not in b"[{\n")


class Decoder(Generic[T]):
    """`msgspec.json.Decoder`, refusing JSON nested deeper than `MAX_DEPTH` first."""

    __slots__ = ("_decode", "_lines", "limit", "unchecked")

    @overload
    def __init__(self: Decoder[Any], *, limit: int = MAX_DEPTH) -> None: ...

    @overload
    def __init__(self, type: type[T], *, limit: int = MAX_DEPTH) -> None: ...

    @overload
    def __init__(self, type: Any, *, limit: int = MAX_DEPTH) -> None: ...

    def __init__(self, type: Any = Any, *, limit: int = MAX_DEPTH) -> None:
        decoder = msgspec.json.Decoder(type)
        self._decode, self._lines = decoder.decode, decoder.decode_lines
        self.limit = limit
        # for text already known not to nest deeper (`openers` of a whole read within limit)
        self.unchecked: Callable[[JSONText], T] = self._decode

    def decode(self, data: JSONText) -> T:
        # (the common case inline: bytes with too few openers to nest deeper than the limit)
        if type(data) is not bytes or len(data.translate(None, _NOT_OPENERS)) > self.limit:
            check_depth(data, self.limit)
        result: T = self._decode(data)
        return result

    def lines(self, data: bytes) -> list[T]:
        """Every JSON value of `data`, separated by whitespace (msgspec's `decode_lines`: a
        value may span lines and a line may hold several), each nested at most `limit` deep
        (the check of a sequence of values is that of its deepest)."""
        check_depth(data, self.limit)
        return self._lines(data)

    def one_per_line(self, data: bytes) -> list[T]:
        """`lines` of `data` whose values the caller knows lie on one line each: checked by the
        line with the most openers (`lines_within`), not by the whole text's nesting."""
        if not lines_within(data, self.limit):
            check_depth(data, self.limit)
        return self._lines(data)


_any = Decoder()


def decode(data: JSONText) -> Any:
    """Any JSON value, depth-checked (the untyped `msgspec.json.decode`)."""
    if type(data) is not bytes or len(data.translate(None, _NOT_OPENERS)) > MAX_DEPTH:
        check_depth(data)
    return _decode_any(data)


_decode_any = msgspec.json.Decoder().decode


# -- names, echoes and headers -------------------------------------------------------------------


def check_model_name(name: str, param: str = "model") -> None:
    """InvalidRequest unless `name` is at most MAX_MODEL_BYTES of UTF-8 and printable."""
    if name in GOOD_NAMES:  # passed before (the result depends on `name` alone)
        return
    if len(name) > MAX_MODEL_BYTES or len(name.encode("utf-8", "surrogatepass")) > MAX_MODEL_BYTES:
        raise InvalidRequest(
            f"`{param}` is longer than {MAX_MODEL_BYTES} bytes: {echo(name, 40)}", param=param
        )
    if not name.isprintable():
        raise InvalidRequest(
            f"`{param}` must be printable text (no control characters): {echo(name, 40)}",
            param=param,
        )
    if _DOT_SEGMENT.search(name):
        raise InvalidRequest(f"`{param}` must not contain `.` or `..` path segments", param=param)
    if len(GOOD_NAMES) >= 1024:  # bounded: clients may send any number of names
        GOOD_NAMES.clear()
    GOOD_NAMES.add(name)


GOOD_NAMES: set[str] = set()  # model names that passed check_model_name


_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")


def url_path(model: str) -> str:
    """A model name as URL path segments (providers that put it in the path: Gemini,
    Vertex): each segment percent-encoded, `.`, `..` and empty segments refused."""
    segments = model.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidRequest(
            f"the model {echo(model, 80)} is not a valid path (empty, `.` or `..` segment)",
            param="model",
        )
    return "/".join(quote(segment, safe="") for segment in segments)


def echo(text: str, limit: int = MAX_ECHO) -> str:
    """`text` quoted for a message: printable, at most `limit` characters (then `...`)."""
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else "\ufffd" for c in cut)
    return repr(cut + "...") if len(text) > limit else repr(cut)


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(text: str, limit: int = MAX_HEADER_CHARS) -> bytes:
    """`text` as a header value uvicorn and h11 accept: printable ASCII as is, anything else
    (control characters, non-ASCII) percent-encoded as UTF-8, at most `limit` characters."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text[:limit].strip().encode("ascii")
    quoted = quote(text, safe=_HEADER_SAFE, errors="replace")[:limit]
    return _trim_escape(quoted).strip().encode("ascii")


def _trim_escape(quoted: str) -> str:
    """Drop a percent escape cut in half at the end."""
    tail = quoted[-2:]
    if "%" in tail:
        return quoted[: len(quoted) - 2 + tail.index("%")]
    return quoted


# -- secrets -------------------------------------------------------------------------------------

MIN_SECRET = 8  # shorter values are not scrubbed (they would match ordinary words)
_SEPARATOR = r"[\s\"'+,.\\]{0,8}"  # what may split a key echoed in pieces


def scrub(text: str, secrets: Iterable[str | None], mask: str = "****") -> str:
    """`text` without any of `secrets`: as is, in any case, split by spaces, quotes or
    line breaks, and base64-encoded (standard or URL-safe, at any alignment, e.g. inside a
    Basic credential)."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET:
            text = _pattern(secret).sub(mask, text)
    return text


@lru_cache(maxsize=64)
def _pattern(secret: str) -> re.Pattern[str]:
    plain = _SEPARATOR.join(re.escape(char) for char in secret)
    forms = [plain, *(re.escape(form) for form in _base64_forms(secret))]
    return re.compile("|".join(forms), re.IGNORECASE)


def _base64_forms(secret: str) -> list[str]:
    """The base64 text of `secret` wherever it sits in an encoded blob: for each of the 3
    alignments, the characters that depend on the secret's bytes alone."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        start = -(-offset * 4 // 3) if offset else 0  # skip characters touching the prefix
        end = (offset + len(raw)) // 3 * 4  # stop before the group holding padding
        middle = encoded[start:end]
        if len(middle) >= MIN_SECRET:
            forms.add(middle.decode())
            forms.add(middle.translate(bytes.maketrans(b"+/", b"-_")).decode())
    return sorted(forms, key=len, reverse=True)
