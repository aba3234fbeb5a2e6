"""`steel-worker db`: migrate the defect database, check its schema (Alembic underneath), make
login roles for the workers and analysts (`create-login`, see `worker.storage.roles`), and keep the
evidence crops' month partitions (`partitions`, `prune`, see `worker.storage.partitions`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from worker.core.errors import ConfigError
from worker.storage.session_limits import (
    DEFAULT_LIMITS,
    NONE,
    SessionLimits,
    parse_connection_limit,
    parse_timeout_ms,
)

#: `worker.storage.roles.GROUP_ROLES`'s keys, spelled out so that `--help` imports no SQLAlchemy.
LOGIN_KINDS = ("analyst", "console", "worker")
#: `worker.storage.partitions.DEFAULT_MONTHS_AHEAD`, spelled out so that `--help` imports no SQLAlchemy.
DEFAULT_MONTHS_AHEAD = 3
#: `worker.storage.locks.LockPolicy`'s defaults, spelled out so that `--help` imports no SQLAlchemy.
DEFAULT_PRUNE_LOCK_TIMEOUT_MS = 2_000
DEFAULT_PRUNE_ATTEMPTS = 20
DEFAULT_PRUNE_MAX_WAIT_S = 600.0
#: Environment variables of `db prune` and `db create-login` (a flag wins over its variable).
PRUNE_ENV = {
    "lock_timeout_ms": "DB_PRUNE_LOCK_TIMEOUT_MS",
    "attempts": "DB_PRUNE_ATTEMPTS",
    "max_wait": "DB_PRUNE_MAX_WAIT_S",
}
LOGIN_ENV = {
    "statement_timeout_ms": "LOGIN_STATEMENT_TIMEOUT_MS",
    "idle_in_transaction_timeout_ms": "LOGIN_IDLE_IN_TRANSACTION_TIMEOUT_MS",
    "connection_limit": "LOGIN_CONNECTION_LIMIT",
}

_EPILOG = """\
examples:
  DATABASE_URL=postgresql://steel@db:5432/steel steel-worker db upgrade --wait 60
      wait up to 60 s for the server, then migrate to the newest revision (what the worker needs)
  steel-worker db current          the database's revision and the one this code needs
  steel-worker db check            fail unless the database is at head and the code's tables match
  steel-worker db downgrade -1     revert the newest migration (`base` reverts all: drops the data)
  WORKER_DB_PASSWORD=... steel-worker db create-login steel_worker_app --role worker \
      --password-env WORKER_DB_PASSWORD
      the workers' login (a member of steel_worker), password read from $WORKER_DB_PASSWORD;
      again: updates the password. Run it as the database owner, after `db upgrade`.
  ANNA_PASSWORD=... steel-worker db create-login anna --role analyst --password-env ANNA_PASSWORD
      an analyst's login (a member of the read-only steel_analyst)
  steel-worker db create-login etl_reader --role analyst
      a login without a password (trust, peer or certificate authentication)
  steel-worker db partitions --months-ahead 3
      make tile_images' month partitions through 3 months ahead (`db upgrade` does it too; run it
      monthly, e.g. from cron, so that crops never pile up in the default partition)
  steel-worker db create-login anna --role analyst --idle-in-transaction-timeout-ms 120000
      an analyst whose transactions end after 2 idle minutes (defaults per role: see create-login -h)
  steel-worker db prune --older-than 90d --dry-run
      list the evidence crops older than 90 days that a prune would drop; without --dry-run, drop
      them (whole months; detections and frames stay)
  steel-worker db prune --older-than 90d --lock-timeout-ms 1000 --attempts 30 --max-wait 900
      hold the worker's inserts up at most 1 s at a time; give up (exit status 2, naming the
      sessions that held the lock) after 30 tries or 15 minutes

The database comes from --database-url or DATABASE_URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB);
prefer the environment variable for URLs with a password. The worker refuses to start until
`db upgrade` has been run. Plain `alembic` works too, from the repository root (alembic.ini).
Passwords are read from the environment variable --password-env names, never from the command
line (where `ps` shows them), and never printed.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "db",
        help="migrate the defect database (upgrade, downgrade), show or check its schema revision",
        description=(
            "Manage the defect database's schema: tables defect_classes (seeded with the default "
            "catalogue), models, frames, detections, alerts, tile_images (the evidence crops, "
            "partitioned by month), alert_strip_locks, the analysts' views, the read-only role "
            "steel_analyst and the worker's role steel_worker; make login roles that are members of "
            "those roles; make and prune the crops' month partitions."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the database to accept connections first (default: %(default)g)",
    )
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="apply migrations up to REVISION (default: head)")
    upgrade.add_argument("revision", nargs="?", default="head", metavar="REVISION")
    downgrade = actions.add_parser("downgrade", help="revert migrations down to REVISION (-1, base, 0001…)")
    downgrade.add_argument("revision", metavar="REVISION")
    actions.add_parser("check", help="fail unless the database is at head and tables.py matches it")
    actions.add_parser("current", help="print the database's revision and the head revision")
    months = actions.add_parser(
        "partitions",
        help="make the evidence crops' month partitions ahead (tile_images), and list them",
    )
    months.add_argument(
        "--months-ahead",
        type=int,
        default=DEFAULT_MONTHS_AHEAD,
        metavar="N",
        help="make this month's partition and the next N months' (default: %(default)s)",
    )
    prune = actions.add_parser(
        "prune",
        help="drop the evidence crops older than an age (whole month partitions of tile_images)",
        description=(
            "Drop the month partitions of tile_images that lie wholly before now minus --older-than, "
            "and delete the default partition's crops older than that. A crop is kept at least "
            "--older-than and at most about a month longer. Detections, frames and alerts stay. "
            "A DROP waits for its lock at most --lock-timeout-ms per try (the worker's inserts queue "
            "behind it meanwhile) and tries again with backoff; if no try gets the lock, it exits 2 "
            "and names the sessions that held it."
        ),
    )
    prune.add_argument("--older-than", required=True, metavar="AGE", help="an age such as 90d, 12w or 36h")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, drop nothing")
    prune.add_argument(
        "--lock-timeout-ms",
        type=_positive_int("--lock-timeout-ms", PRUNE_ENV["lock_timeout_ms"]),
        default=os.environ.get(PRUNE_ENV["lock_timeout_ms"]) or DEFAULT_PRUNE_LOCK_TIMEOUT_MS,
        metavar="MS",
        help=(
            "longest wait of one try for the lock a partition's DROP needs; the worker's inserts queue"
            " behind a waiting DROP, so this is the longest they are held up at a time"
            f" (default: ${PRUNE_ENV['lock_timeout_ms']} or %(default)s)"
        ),
    )
    prune.add_argument(
        "--attempts",
        type=_positive_int("--attempts", PRUNE_ENV["attempts"]),
        default=os.environ.get(PRUNE_ENV["attempts"]) or DEFAULT_PRUNE_ATTEMPTS,
        metavar="N",
        help=(
            "tries per partition before giving up; a try is skipped (and counted) while a session"
            " idle in its transaction holds a lock on tile_images. Pauses between tries: 1 s,"
            f" doubling up to 30 s (default: ${PRUNE_ENV['attempts']} or %(default)s)"
        ),
    )
    prune.add_argument(
        "--max-wait",
        type=_positive_float("--max-wait", PRUNE_ENV["max_wait"]),
        default=os.environ.get(PRUNE_ENV["max_wait"]) or DEFAULT_PRUNE_MAX_WAIT_S,
        metavar="SECONDS",
        help=(
            "give up on a partition after this long; longer than the analysts' idle-in-transaction"
            " timeout (5 min by default), so that a forgotten transaction ends before prune gives up"
            f" (default: ${PRUNE_ENV['max_wait']} or %(default)g)"
        ),
    )
    login = actions.add_parser(
        "create-login",
        help="create or update a login role that is a member of steel_worker or steel_analyst",
        description=(
            "Create the login role NAME if missing (else make it a login with the given password), "
            "and make it a member of steel_worker (--role worker) or steel_analyst (--role analyst). "
            "Idempotent. Run it as the database owner or a superuser, after `db upgrade`."
        ),
    )
    login.add_argument("name", metavar="NAME", help="the login's name: letters, digits and _")
    login.add_argument(
        "--role",
        required=True,
        choices=LOGIN_KINDS,
        help=(
            "worker: member of steel_worker (what the worker needs); analyst: of steel_analyst"
            " (read-only); console: of steel_console (the web console)"
        ),
    )
    login.add_argument(
        "--password-env",
        metavar="VAR",
        help=(
            "read the password from the environment variable VAR (never from a flag: `ps` shows "
            "flags); without it the login has no password (trust, peer or certificate authentication)"
        ),
    )
    for field, flag, parse, meaning in (
        (
            "statement_timeout_ms",
            "--statement-timeout-ms",
            parse_timeout_ms,
            "the login's statement_timeout: a statement running longer is cancelled",
        ),
        (
            "idle_in_transaction_timeout_ms",
            "--idle-in-transaction-timeout-ms",
            parse_timeout_ms,
            "the login's idle_in_transaction_session_timeout: a session idle this long inside a"
            " transaction is closed, releasing its locks (which `db prune` and behind it the worker's"
            " inserts would otherwise wait for)",
        ),
        (
            "connection_limit",
            "--connection-limit",
            parse_connection_limit,
            "the most sessions the login may open at once",
        ),
    ):
        defaults = ", ".join(f"{kind} {_shown(getattr(DEFAULT_LIMITS[kind], field))}" for kind in LOGIN_KINDS)
        login.add_argument(
            flag,
            dest=field,
            type=_limit(flag, LOGIN_ENV[field], parse),
            default=os.environ.get(LOGIN_ENV[field]) or None,
            metavar="MS" if field.endswith("_ms") else "N",
            help=(
                f"{meaning}; {NONE} for no limit (default: ${LOGIN_ENV[field]}, else per --role: {defaults})"
            ),
        )
    parser.set_defaults(func=run)


def _shown(value: int | None) -> str:
    return NONE if value is None else str(value)


_UNSET = object()


def _limit(flag: str, env: str, parse: Any) -> Any:
    """An argparse type: `parse`, with `_UNSET` standing for "no limit" (None means "not given")."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (from {flag} or ${env})") from None
        return _UNSET if value is None else value

    return convert


def _positive_int(flag: str, env: str) -> Any:
    def convert(text: str) -> int:
        value = str(text).strip()
        if not value.isascii() or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of 1 or more, received {text!r} (from {flag} or ${env})"
            )
        return int(value)

    return convert


def _positive_float(flag: str, env: str) -> Any:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds above 0, received {text!r} (from {flag} or ${env})"
            )
        return value

    return convert


def run(args: argparse.Namespace) -> int:
    from worker.infra.postgres import wait_for_database  # noqa: PLC0415
    from worker.storage import migrate  # noqa: PLC0415

    url = args.database_url
    if not url:
        raise ConfigError("steel-worker db: no database; set DATABASE_URL or pass --database-url")
    if args.wait > 0:
        wait_for_database(url, timeout_s=args.wait)
    if args.db_action == "create-login":
        return _create_login(url, args)
    if args.db_action in ("partitions", "prune"):
        return _partitions(url, args)
    head = migrate.head_revision()
    if args.db_action == "upgrade":
        migrate.upgrade(url, args.revision)
        if migrate.current_revision(url) == head:
            _ensure_months(url, DEFAULT_MONTHS_AHEAD)
    elif args.db_action == "downgrade":
        migrate.downgrade(url, args.revision)
    elif args.db_action == "check":
        migrate.check(url)
    current = migrate.current_revision(url)
    state = "head" if current == head else f"head is {head}"
    print(f"database schema at revision {current or 'none'} ({state})")
    return 0


def _ensure_months(url: str, months_ahead: int) -> None:
    from worker.storage.partitions import ensure_months_at  # noqa: PLC0415

    made = ensure_months_at(url, months_ahead)
    if made:
        print(f"tile_images: made partitions {', '.join(made)}")


def _partitions(url: str, args: argparse.Namespace) -> int:
    from worker.storage import partitions  # noqa: PLC0415
    from worker.storage.engine import create_engine  # noqa: PLC0415
    from worker.storage.schema_check import assert_schema_current  # noqa: PLC0415

    engine = create_engine(url)
    try:
        assert_schema_current(engine)
        if args.db_action == "prune":
            from worker.storage.locks import LockPolicy  # noqa: PLC0415

            policy = LockPolicy(args.lock_timeout_ms, args.attempts, args.max_wait)
            report = partitions.prune(
                engine,
                partitions.parse_age(args.older_than),
                dry_run=args.dry_run,
                lock=policy,
                notify=lambda line: print(line, file=sys.stderr, flush=True),
            )
            print(report.describe())
            return 0
        made = partitions.ensure_months(engine, args.months_ahead)
        with engine.connect() as conn:
            listed = partitions.partitions(conn)
    finally:
        engine.dispose()
    print(f"made {', '.join(made)}" if made else "no partition was missing")
    for p in listed:
        print(f"  {p.name}: {p.rows} crops, {p.bytes / 1e6:.1f} MB")
    return 0


def _create_login(url: str, args: argparse.Namespace) -> int:
    from worker.storage.roles import create_login  # noqa: PLC0415

    password = None
    if args.password_env is not None:
        password = os.environ.get(args.password_env)
        if not password:
            state = "is empty" if password is not None else "is not set"
            raise ConfigError(
                f"create-login {args.name}: --password-env {args.password_env}: expected the"
                f" environment variable {args.password_env} to hold the password, but it {state}"
            )
    outcome = create_login(url, args.name, args.role, password, _limits(args))
    print(outcome.describe())
    return 0


def _limits(args: argparse.Namespace) -> SessionLimits:
    """The flags (or their variables) over the role's defaults; `_UNSET` is "no limit"."""
    defaults = DEFAULT_LIMITS[args.role]
    chosen = {}
    for field in LOGIN_ENV:
        value = getattr(args, field)
        chosen[field] = getattr(defaults, field) if value is None else None if value is _UNSET else value
    return SessionLimits(**chosen)
