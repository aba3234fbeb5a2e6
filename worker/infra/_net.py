"""Small network helpers shared by the embedded services."""

from __future__ import annotations

import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(text: str, lines: int = 30) -> str:
    """The last `lines` lines of `text`, for error messages that quote a log."""
    return "\n".join(text.splitlines()[-lines:])


def read_text_or_empty(path: Path) -> str:
    """A log file's text for an error message; empty when it cannot be read (never raises)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
