"""The console's sessions, kept in the database (`console_sessions`, revision 0009).

A login starts a session: a random 256-bit token goes into the (signed) session cookie, and its
sha256 into a row with the user's name and the moment it expires. Every request with a password
session looks its token up here, joined with the user as stored now.

Guarantees:
- A session ends, for every copy of its cookie, when its row is gone: `end` at logout; every
  session of a user when their password or role is set again or they are disabled
  (`users.set_user`, `users.disable_user`, in the same transaction); and at `expires_at`
  (`SESSION_HOURS` after the login, never extended).
- The table holds only sha256 digests: reading it (a backup, a leaked dump) gives no way in.
  A token that is not 43 URL-safe characters is refused before any query.
- `user` answers None for an unknown, ended or expired session and for a disabled user: one
  query, no write.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

import sqlalchemy as sa

from worker.console.users import User
from worker.storage.tables import console_sessions, console_users

SESSION_HOURS = 8
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def start(conn: sa.Connection, name: str, hours: float = SESSION_HOURS) -> str:
    """A new session of the user `name` for `hours`; returns its token (for the cookie only).
    Sessions that expired, of anyone, are deleted on the way (the table stays small)."""
    token = secrets.token_urlsafe(32)
    conn.execute(sa.delete(console_sessions).where(console_sessions.c.expires_at < sa.func.now()))
    conn.execute(
        sa.insert(console_sessions).values(
            token_sha256=_digest(token),
            user_name=name,
            expires_at=sa.func.now() + timedelta(hours=hours),
        )
    )
    return token


def user(conn: sa.Connection, token: object) -> User | None:
    """The enabled user whose unexpired session `token` is; None otherwise."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return None
    row = conn.execute(
        sa.select(console_users.c.name, console_users.c.role)
        .join(console_sessions, console_sessions.c.user_name == console_users.c.name)
        .where(
            console_sessions.c.token_sha256 == _digest(token),
            console_sessions.c.expires_at > sa.func.now(),
            console_users.c.disabled_at.is_(None),
        )
    ).first()
    return User(row.name, row.role) if row else None


def end(conn: sa.Connection, token: object) -> None:
    """End the session `token` (logout); nothing happens for an unknown one."""
    if isinstance(token, str) and _TOKEN.fullmatch(token):
        conn.execute(sa.delete(console_sessions).where(console_sessions.c.token_sha256 == _digest(token)))
