"""Limits a login role carries into every session: `statement_timeout`,
`idle_in_transaction_session_timeout` (role settings, `ALTER ROLE … SET`) and its connection limit
(`ALTER ROLE … CONNECTION LIMIT`). Pure: no SQLAlchemy, so that `--help` can show the defaults.

An analyst idle in a transaction holds its locks until it ends; a maintenance DROP then waits
behind it and the worker's inserts behind the DROP. The idle timeout ends such a transaction (the
server closes the session), the statement timeout a runaway query, and the connection limit keeps
a leaked pool or a dashboard from taking the server's connections from the worker.

Defaults per `--role`:

- analyst: statements up to 10 min, idle in a transaction up to 5 min, 5 connections;
- console: statements up to 1 min, idle in a transaction up to 1 min, 20 connections (its pool
  opens 15 at most);
- worker: none (the worker sets its own per connection: DB_STATEMENT_TIMEOUT_MS, …).

A session may still `SET` a longer timeout for itself: these are defaults for people and tools
that do not think about it, not a security boundary. The connection limit is enforced by the
server (superusers are exempt, and logins made here never are superusers).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The word that means "no limit" in flags and environment variables.
NONE = "none"


@dataclass(frozen=True)
class SessionLimits:
    """None: no limit (the setting is reset; the connection limit is -1)."""

    statement_timeout_ms: int | None = None
    idle_in_transaction_timeout_ms: int | None = None
    connection_limit: int | None = None

    def describe(self) -> str:
        """`statement_timeout 600 s, idle_in_transaction_session_timeout 300 s, at most 5
        connections`, or `no session limits`."""
        parts = []
        if self.statement_timeout_ms is not None:
            parts.append(f"statement_timeout {_duration(self.statement_timeout_ms)}")
        if self.idle_in_transaction_timeout_ms is not None:
            parts.append(
                f"idle_in_transaction_session_timeout {_duration(self.idle_in_transaction_timeout_ms)}"
            )
        if self.connection_limit is not None:
            parts.append(f"at most {self.connection_limit} connections")
        return ", ".join(parts) or "no session limits"


DEFAULT_LIMITS: dict[str, SessionLimits] = {
    "analyst": SessionLimits(600_000, 300_000, 5),
    "console": SessionLimits(60_000, 60_000, 20),
    "worker": SessionLimits(),
}


def _duration(ms: int) -> str:
    return f"{ms / 1000:g} s" if ms % 1000 == 0 else f"{ms} ms"


def parse_timeout_ms(text: str) -> int | None:
    """`300000` (milliseconds) as 300000, `none` or `0` as None (no timeout); ValueError otherwise."""
    value = text.strip().lower()
    if value in (NONE, "0"):
        return None
    if not value.isascii() or not value.isdigit() or int(value) > 2_147_483_647:
        raise ValueError(
            f"expected milliseconds (a whole number, 0 or none for no timeout), received {text!r}"
        )
    return int(value)


def parse_connection_limit(text: str) -> int | None:
    """`5` as 5, `none` or `-1` as None (no limit); ValueError otherwise (0 would lock the login out)."""
    value = text.strip().lower()
    if value in (NONE, "-1"):
        return None
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 1_000_000:
        raise ValueError(f"expected a number of connections from 1 (or none for no limit), received {text!r}")
    return int(value)
