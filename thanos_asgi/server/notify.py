"""systemd's readiness protocol (`Type=notify` / `Type=notify-reload`), without a dependency.

systemd passes a unix datagram socket in `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
namespace); the service sends newline-separated `KEY=value` lines to it: `READY=1` once it
serves, `RELOADING=1` with `MONOTONIC_USEC` when a reload starts, `STOPPING=1` when it stops.
Without the variable every call does nothing.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

_log = logging.getLogger("thanos_asgi.serve")


class Notifier:
    def __init__(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address

    def send(self, *lines: str) -> bool:
        """Send `lines` as one datagram; False (logged) if there is no socket or it failed."""
        if not self.address or not hasattr(socket, "AF_UNIX"):
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            _log.warning("could not notify systemd at $NOTIFY_SOCKET: %s", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
