"""Where logins are kept: the system keyring, or private files on headless machines.

A `Token` is what one login holds: the short-lived access token, the long-lived credential
that renews it (an OAuth refresh token, or the GitHub token behind a Copilot token), when the
access token expires, and a masked identity for status pages. Its repr never shows a secret.

`default_store(directory)` uses the system keyring (service "thanos") when a real backend
exists, else `FileStore(directory)`: one JSON file per login, mode 0600, in a 0700 folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from thanos_asgi.exceptions import ThanosError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

log = logging.getLogger("thanos_asgi.logins")

SERVICE = "thanos"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Token:
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    expires_at: float | None = None  # unix seconds; None: does not expire
    identity: str = ""  # masked, safe to show
    extra: dict[str, str] = field(default_factory=dict, repr=False)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Token).decode


def mask(secret: str) -> str:
    """`gho_abcdef...yz` -> `gh****yz`: enough to tell two logins apart, nothing more."""
    return f"{secret[:2]}****{secret[-2:]}" if len(secret) >= 12 else "****"


class TokenStoreError(ThanosError):
    type = "login_store_error"
    code = "login_store_error"


class TokenStore(Protocol):
    kind: str  # "keyring", "file" or "memory", for status pages

    def load(self, name: str) -> Token | None: ...

    def save(self, name: str, token: Token) -> None: ...

    def delete(self, name: str) -> None: ...


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a login name: {name!r}")
    return name


def _parse(name: str, data: bytes | str) -> Token | None:
    try:
        return _decode(data)
    except msgspec.DecodeError:
        log.warning("the stored login %r is unreadable; ignoring it", name)
        return None


class FileStore:
    """One JSON file per login in `directory` (created 0700), each written 0600 atomically."""

    kind = "file"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        return self.directory / f"{_checked(name)}.json"

    def load(self, name: str) -> Token | None:
        path = self._path(name)
        try:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # someone widened it: take it back
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return _parse(name, data)

    def save(self, name: str, token: Token) -> None:
        path = self._path(name)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        temporary = self.directory / f".{name}.{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temporary, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(_encode(token))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


class KeyringStore:
    """The system keyring, service "thanos", one entry per login (`backend`: the current one
    unless given)."""

    kind = "keyring"

    def __init__(self, backend: KeyringBackend | None = None, *, service: str = SERVICE) -> None:
        self.backend = backend
        self.service = service

    def _backend(self) -> KeyringBackend:
        import keyring

        return self.backend or keyring.get_keyring()

    def load(self, name: str) -> Token | None:
        with _keyring_errors("read"):
            data = self._backend().get_password(self.service, _checked(name))
        return None if data is None else _parse(name, data)

    def save(self, name: str, token: Token) -> None:
        with _keyring_errors("write"):
            self._backend().set_password(self.service, _checked(name), _encode(token).decode())

    def delete(self, name: str) -> None:
        from keyring.errors import PasswordDeleteError

        with _keyring_errors("write"), contextlib.suppress(PasswordDeleteError):
            self._backend().delete_password(self.service, _checked(name))  # absent: fine


@contextlib.contextmanager
def _keyring_errors(action: str) -> Iterator[None]:
    """Keyring failures as our error, naming only the exception type (never its text)."""
    from keyring.errors import KeyringError

    try:
        yield
    except KeyringError as exc:
        raise TokenStoreError(
            f"could not {action} the system keyring ({type(exc).__name__})"
        ) from None


class MemoryStore:
    """Logins for this process only (no keyring and no folder given); lost on restart."""

    kind = "memory"

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}

    def load(self, name: str) -> Token | None:
        return self._tokens.get(name)

    def save(self, name: str, token: Token) -> None:
        self._tokens[name] = token

    def delete(self, name: str) -> None:
        self._tokens.pop(name, None)


def usable_keyring(backend: KeyringBackend) -> bool:
    """A real system keyring, not keyring's `fail` backend, an empty chainer, or a
    low-priority plaintext file (keyrings.alt): those are no better than our own files."""
    from keyring.backends import chainer, fail

    if isinstance(backend, fail.Keyring):
        return False
    if isinstance(backend, chainer.ChainerBackend):
        return any(b.priority >= 1 for b in backend.backends)
    return bool(backend.priority >= 1)


def default_store(directory: str | os.PathLike[str] | None) -> TokenStore:
    """The keyring when a usable one exists, else private files in `directory` (or, with no
    directory, memory)."""
    import keyring

    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken keyring configuration must not stop the gateway
        log.warning("the system keyring could not be loaded; using files", exc_info=False)
    else:
        if usable_keyring(backend):
            return KeyringStore()
    return FileStore(directory) if directory is not None else MemoryStore()
