"""Login roles for the defect database: `steel-worker db create-login NAME --role worker|analyst|console`.

The migrations create three NOLOGIN roles and grant them privileges in each database:
`steel_worker` (what the worker needs and nothing more), `steel_analyst` (read-only) and
`steel_console` (the web console: read-only as steel_analyst, plus its users, reviews and alert
acknowledgements). People and services log in with login roles of their own that are members of
one of them; `create_login` makes such a login.

Guarantees:
- Idempotent and declarative: afterwards the role NAME exists, can log in, inherits its group's
  privileges, is a member of the group, and has exactly the password given (none without one:
  trust, peer or certificate authentication). Running it again changes nothing else; another
  password replaces the stored one. Memberships in other roles are left as they are.
- The password never travels in clear: it is hashed here (SCRAM-SHA-256 or md5, as the server's
  `password_encryption` says, with libpq's `PQencryptPasswordConn`), so the statement the server
  sees and may log holds only the hash. It is never printed, logged or put in an error message.
- NAME is checked before anything runs (letters, digits and _, starting with a letter or _, at
  most 63 characters, not `pg_…`, not one of the group roles) and quoted as an identifier all the
  same. A superuser, the database's owner, or the role this command connects as is refused: a
  least-privilege login that is one of those would not be one, and changing one's own password
  here is a mistake.
- Session limits (`worker.storage.session_limits`): afterwards the role has exactly the given
  `statement_timeout` and `idle_in_transaction_session_timeout` role settings (for every database;
  none given: reset) and connection limit (none: -1, unlimited); the defaults depend on the kind:
  an analyst's idle transaction ends after 5 minutes, so that it cannot hold its locks, and with
  them a maintenance DROP and the worker's inserts queued behind it, for longer. Settings the
  role has besides these three are left as they are. They apply to sessions opened afterwards.
- Roles are cluster-wide, privileges per database: the group role must exist (any database on
  the server migrated to head has created it). Run it as a superuser or a role with CREATEROLE
  (and ADMIN OPTION on the group from PostgreSQL 16): in compose, the database owner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import psycopg2.errors
import sqlalchemy as sa
from psycopg2 import sql
from psycopg2.extensions import encrypt_password

from worker.core.errors import ConfigError
from worker.storage.engine import create_engine
from worker.storage.session_limits import DEFAULT_LIMITS, SessionLimits
from worker.storage.tables import ANALYST_ROLE, CONSOLE_ROLE, WORKER_ROLE

NO_LIMITS = SessionLimits()

LoginKind = Literal["worker", "analyst", "console"]

#: `--role` value -> the NOLOGIN group role the migrations create.
GROUP_ROLES: dict[str, str] = {"worker": WORKER_ROLE, "analyst": ANALYST_ROLE, "console": CONSOLE_ROLE}

_LOGIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class LoginOutcome:
    """What `create_login` did to the login role `name`."""

    name: str
    group: str
    created: bool
    has_password: bool
    became_member: bool
    limits: SessionLimits = NO_LIMITS

    def describe(self) -> str:
        """One line for people; never the password."""
        what = "created" if self.created else "updated"
        password = (
            "password set" if self.has_password else "no password (trust, peer or certificate authentication)"
        )
        member = "now a member of" if self.became_member else "already a member of"
        line = f"login role {self.name} {what}: LOGIN, {password}; {member} {self.group}"
        return line if self.limits == NO_LIMITS else f"{line}; {self.limits.describe()}"


def check_login_name(name: str) -> str:
    """`name` if it can be a login role; ConfigError saying what was expected otherwise."""
    if not _LOGIN_NAME.fullmatch(name):
        raise ConfigError(
            f"create-login: NAME must be letters, digits and _ starting with a letter or _, at most"
            f" 63 characters; received {name!r}"
        )
    if name.lower().startswith("pg_"):
        raise ConfigError(
            f"create-login: NAME may not start with pg_ (reserved by PostgreSQL); received {name!r}"
        )
    if name in GROUP_ROLES.values():
        raise ConfigError(
            f"create-login: NAME must be a login of its own, not the group role {name!r}; received {name!r}"
        )
    return name


def create_login(
    database_url: str,
    name: str,
    kind: LoginKind,
    password: str | None = None,
    limits: SessionLimits | None = None,
) -> LoginOutcome:
    """Create or update the login role `name`, a member of the `kind` group role (see the module doc).

    `password` None: the login has no password. `limits` None: the kind's defaults
    (`worker.storage.session_limits.DEFAULT_LIMITS`). ConfigError for a bad name, an unknown kind, an
    empty password, a missing group role, a superuser or the connecting role as `name`, or when
    the connecting role may not create roles. Other database errors propagate.
    """
    check_login_name(name)
    if kind not in GROUP_ROLES:
        raise ConfigError(f"create-login: --role must be one of {sorted(GROUP_ROLES)}, received {kind!r}")
    if password is not None and not password:
        raise ConfigError("create-login: expected a non-empty password, received an empty one")
    group = GROUP_ROLES[kind]
    limits = DEFAULT_LIMITS[kind] if limits is None else limits
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            return _create_login(conn, name, group, password, limits)
    except (sa.exc.ProgrammingError, psycopg2.errors.InsufficientPrivilege) as exc:
        error = getattr(exc, "orig", exc)
        if not isinstance(error, psycopg2.errors.InsufficientPrivilege):
            raise
        reason = " ".join(str(error.pgerror or error).split())
        raise ConfigError(
            f"create-login {name}: the role this command connects as may not create roles or grant"
            f" {group} ({reason}); run it as a superuser or a role with CREATEROLE (the database"
            " owner in compose.yaml)"
        ) from None
    finally:
        engine.dispose()


def _create_login(
    conn: sa.Connection, name: str, group: str, password: str | None, limits: SessionLimits
) -> LoginOutcome:
    if name == conn.execute(sa.text("SELECT current_user")).scalar_one():
        raise ConfigError(
            f"create-login: NAME {name!r} is the role this command connects as; give the login a name"
            " of its own"
        )
    if not conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :g"), {"g": group}).scalar():
        raise ConfigError(
            f"create-login {name}: role {group} does not exist on this server; run `steel-worker db"
            " upgrade` on the database first (the migrations create it)"
        )
    raw = conn.connection.dbapi_connection
    if raw is None:  # pragma: no cover  (an open SQLAlchemy connection always has one)
        raise ConfigError("create-login: the database connection was closed")
    secret = None if password is None else encrypt_password(password, name, raw)
    created = _create_or_alter(conn, raw, name, secret)
    was_member = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_auth_members AS m"
            " JOIN pg_roles AS g ON g.oid = m.roleid JOIN pg_roles AS r ON r.oid = m.member"
            " WHERE g.rolname = :g AND r.rolname = :n"
        ),
        {"n": name, "g": group},
    ).scalar()
    if not was_member:
        _execute(raw, sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
    _set_limits(raw, name, limits)
    return LoginOutcome(
        name=name,
        group=group,
        created=created,
        has_password=secret is not None,
        became_member=not was_member,
        limits=limits,
    )


def _set_limits(raw: Any, name: str, limits: SessionLimits) -> None:
    """Give the role exactly `limits` (see the module doc): role settings for all databases."""
    role = sql.Identifier(name)
    connections = -1 if limits.connection_limit is None else limits.connection_limit
    _execute(raw, sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(role, sql.Literal(connections)))
    for setting, value in (
        ("statement_timeout", limits.statement_timeout_ms),
        ("idle_in_transaction_session_timeout", limits.idle_in_transaction_timeout_ms),
    ):
        if value is None:
            _execute(raw, sql.SQL("ALTER ROLE {} RESET {}").format(role, sql.Identifier(setting)))
        else:
            _execute(
                raw,
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    role, sql.Identifier(setting), sql.Literal(value)
                ),
            )


def _create_or_alter(conn: sa.Connection, raw: Any, name: str, secret: str | None) -> bool:
    """Create the login role, or make the existing one a login with `secret`; True if created."""
    password = sql.SQL("NULL") if secret is None else sql.Literal(secret)
    existing = conn.execute(
        sa.text(
            "SELECT r.rolsuper, d.datname IS NOT NULL AS owns_database FROM pg_roles AS r"
            " LEFT JOIN pg_database AS d ON d.datdba = r.oid AND d.datname = current_database()"
            " WHERE r.rolname = :n"
        ),
        {"n": name},
    ).first()
    if existing is None:
        try:
            with conn.begin_nested():
                _execute(
                    raw,
                    sql.SQL("CREATE ROLE {} LOGIN INHERIT PASSWORD {}").format(
                        sql.Identifier(name), password
                    ),
                )
            return True
        except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
            pass  # created by another run at the same moment: update it below
    elif existing.rolsuper or existing.owns_database:
        what = "is a superuser" if existing.rolsuper else "owns this database"
        raise ConfigError(
            f"create-login: role {name!r} exists and {what}; a least-privilege login must not be one"
            " (nor own the database): choose another NAME"
        )
    _execute(raw, sql.SQL("ALTER ROLE {} LOGIN INHERIT PASSWORD {}").format(sql.Identifier(name), password))
    return False


def _execute(raw: Any, statement: sql.Composable) -> None:
    """Run a composed statement on the raw psycopg2 connection: DDL takes no bind parameters, so
    identifiers and the (hashed) password are quoted by psycopg2.sql, never formatted in."""
    with raw.cursor() as cursor:
        cursor.execute(statement)
