"""The console's users: Argon2id password hashes in `console_users`, roles that nest.

Roles, each with the rights of the one before: `viewer` reads every page; `reviewer` also
reviews crops; `maintenance` also acknowledges alerts; `admin` also manages users. A password is
hashed with argon2-cffi's defaults (Argon2id, RFC 9106's low-memory profile) and never stored,
logged or echoed. `authenticate` spends the same hashing time whether or not the user exists, so
the answer's timing does not say which names are real, and holds no database connection while it
hashes. Setting a user's password or role again, or disabling the user, ends every session of
theirs in the same transaction (`console_sessions`): a copied session cookie is refused after.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.dialects.postgresql import insert

from worker.core.errors import ConfigError
from worker.storage.tables import CONSOLE_ROLES, console_sessions, console_users

#: rights a role needs, by the least role that has them
RANK = {role: rank for rank, role in enumerate(CONSOLE_ROLES)}
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # a longer one is refused, not hashed (hashing cost is per byte)
MAX_NAME_CHARS = 64

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("a password no user has, hashed once to spend the same time")


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user has the rights of `role` (roles nest: admin may everything)."""
        return RANK[self.role] >= RANK[role]


def check_name(name: str) -> str:
    value = name.strip()
    if not value or len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise ConfigError(
            f"a user name is 1 to {MAX_NAME_CHARS} printable characters, received {name[:80]!r}"
        )
    return value


def check_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ConfigError(
            f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters,"
            f" received one of {len(password)}"
        )
    return password


def set_user(engine: sa.Engine, name: str, role: str, password: str) -> bool:
    """Create the user, or give an existing one this role and password (and enable it again), ending
    every session of theirs; True if it was created. ConfigError for an unknown role, a bad name or
    a short password."""
    if role not in RANK:
        raise ConfigError(f"--role: expected one of {', '.join(CONSOLE_ROLES)}, received {role!r}")
    row = {"name": check_name(name), "role": role, "password_hash": _hasher.hash(check_password(password))}
    with engine.begin() as conn:
        existed = conn.execute(
            sa.select(console_users.c.name).where(console_users.c.name == row["name"])
        ).first()
        statement = insert(console_users).values(**row)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[console_users.c.name],
                set_={"role": role, "password_hash": row["password_hash"], "disabled_at": None},
            )
        )
        _end_sessions(conn, row["name"])
    return existed is None


def disable_user(engine: sa.Engine, name: str) -> None:
    """Lock the user out and end their sessions (its name stays on its reviews and acknowledgements)."""
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(console_users)
            .where(console_users.c.name == name, console_users.c.disabled_at.is_(None))
            .values(disabled_at=sa.func.now())
            .returning(console_users.c.name)
        ).first()
        _end_sessions(conn, name)
    if done is None:
        raise ConfigError(f"disable-user: no enabled user named {name!r}")


def _end_sessions(conn: sa.Connection, name: str) -> None:
    conn.execute(sa.delete(console_sessions).where(console_sessions.c.user_name == name))


def authenticate(engine: sa.Engine, name: str, password: str) -> User | None:
    """The user whose name and password these are, enabled; None otherwise (same work either way).
    The stored hash is read on a connection given back before the hashing starts."""
    row = None
    if 0 < len(name) <= MAX_NAME_CHARS and len(password) <= MAX_PASSWORD_CHARS:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(console_users.c.name, console_users.c.role, console_users.c.password_hash).where(
                    console_users.c.name == name, console_users.c.disabled_at.is_(None)
                )
            ).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password[:MAX_PASSWORD_CHARS])
    except (VerificationError, InvalidHashError):
        return None
    return User(row.name, row.role) if row else None


def current(conn: sa.Connection, name: str) -> User | None:
    """The enabled user `name` as stored now (read on every request that a trusted proxy's header
    names, so a role change or a lock-out applies at once)."""
    row = conn.execute(
        sa.select(console_users.c.name, console_users.c.role).where(
            console_users.c.name == name, console_users.c.disabled_at.is_(None)
        )
    ).first()
    return User(row.name, row.role) if row else None
