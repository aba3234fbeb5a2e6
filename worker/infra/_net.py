"""Small network helpers shared by the embedded services."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(text: str, lines: int = 30) -> str:
    """The last `lines` lines of `text`, for error messages that quote a log."""
    return "\n".join(text.splitlines()[-lines:])
