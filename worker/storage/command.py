"""`steel-worker db`: migrate the defect database and check its schema (Alembic underneath)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from worker.errors import ConfigError

_EPILOG = """\
examples:
  DATABASE_URL=postgresql://steel@db:5432/steel steel-worker db upgrade --wait 60
      wait up to 60 s for the server, then migrate to the newest revision (what the worker needs)
  steel-worker db current          the database's revision and the one this code needs
  steel-worker db check            fail unless the database is at head and the code's tables match
  steel-worker db downgrade -1     revert the newest migration (`base` reverts all: drops the data)

The database comes from --database-url or DATABASE_URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB);
prefer the environment variable for URLs with a password. The worker refuses to start until
`db upgrade` has been run. Plain `alembic` works too, from the repository root (alembic.ini).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "db",
        help="migrate the defect database (upgrade, downgrade), show or check its schema revision",
        description=(
            "Manage the defect database's schema: tables defect_classes (seeded with the default "
            "catalogue), models, frames, detections, alerts, the analysts' views and the read-only "
            "role steel_analyst."
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.infra.postgres import wait_for_database  # noqa: PLC0415
    from worker.storage import migrate  # noqa: PLC0415

    url = args.database_url
    if not url:
        raise ConfigError("steel-worker db: no database; set DATABASE_URL or pass --database-url")
    if args.wait > 0:
        wait_for_database(url, timeout_s=args.wait)
    head = migrate.head_revision()
    if args.db_action == "upgrade":
        migrate.upgrade(url, args.revision)
    elif args.db_action == "downgrade":
        migrate.downgrade(url, args.revision)
    elif args.db_action == "check":
        migrate.check(url)
    current = migrate.current_revision(url)
    state = "head" if current == head else f"head is {head}"
    print(f"database schema at revision {current or 'none'} ({state})")
    return 0
