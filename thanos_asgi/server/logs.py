"""Logging for `thanos serve`: one handler on the root logger writing JSON or text lines,
with anything shaped like a secret masked in every line it writes.

    configure_logging("info", "json")   # {"ts": …, "level": "info", "logger": "…", "message": …}
    configure_logging("debug", "text")  # 2025-01-01 12:00:00,000 DEBUG thanos_asgi: …

A record whose message is a dict (the access log's) has its fields put at the top level of
the JSON object. Masking is a last line of defence for free text (messages, tracebacks,
other libraries' lines): the gateway's own code never logs keys, and dict messages are
structured records built from fields that hold none, so they are written as they are.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO, Any

import msgspec

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "redact"]

LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}
MASK = "***"
QUIET = ("httpx", "httpcore")

_SECRETS = re.compile(
    r"(?i)"
    r"(?P<named>\b(?:authorization|x-api-key|x-goog-api-key|api[_-]?key|access[_-]?token"
    r"|refresh[_-]?token|token|secret|password|key)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)"
    r"[^\s\"'&,;}]+"
    r"|(?P<scheme>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk-|xai-|gsk_|ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|AIza|ya29\.)[A-Za-z0-9._-]{8,}"
)
_TRIGGERS = (
    *("authoriz", "api", "key", "token", "secret", "password", "bearer", "basic"),
    *(
        "sk-",
        "xai-",
        "gsk_",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "aiza",
        "ya29.",
    ),
)
_encode = msgspec.json.Encoder(enc_hook=str).encode


def redact(text: str) -> str:
    """`text` with API keys, bearer tokens and `key=value` secrets replaced by `***`."""
    lowered = text.lower()
    if any(word in lowered for word in _TRIGGERS):  # the regex is slow; most lines skip it
        return _SECRETS.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    return (match.group("named") or match.group("scheme") or "") + MASK


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, dict) and not record.args:
            fields.update(record.msg)  # structured: fields chosen to hold no secrets
        else:
            fields["message"] = redact(record.getMessage())
        if record.exc_info:
            fields["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            fields["stack"] = redact(self.formatStack(record.stack_info))
        return _encode(fields).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if isinstance(record.msg, dict) and not record.exc_info else redact(text)


def configure_logging(
    level: str | int = "info", fmt: str = "text", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at `level` or above to `stream` (stderr) as `fmt` ("json" or
    "text") lines. Calling it again replaces the handler it installed before."""
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text (got {fmt!r})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name("thanos")
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "thanos"]:
        root.removeHandler(old)
    root.addHandler(handler)
    number = LEVELS[level.lower()] if isinstance(level, str) else level
    root.setLevel(number)
    for chatty in QUIET:  # a line per upstream request, with its URL: only when debugging
        logging.getLogger(chatty).setLevel(max(number, logging.WARNING) if number > 10 else number)
    return handler
