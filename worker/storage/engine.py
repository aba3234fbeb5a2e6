"""Engines for the defect database: one place that turns a database URL into an SQLAlchemy engine.

SQLAlchemy 2.1 maps a bare `postgresql://` URL to the psycopg (3) driver; this project ships
psycopg2. `normalize_url` names the driver explicitly, so `DATABASE_URL=postgresql://…` (the form
libpq, compose files and PaaS providers use) works as is.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from worker.core.errors import ConfigError

_DRIVERLESS = {"postgresql", "postgres"}


def normalize_url(url: str) -> str:
    """`url` with the psycopg2 driver named when it names none; ConfigError if it is not PostgreSQL."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            "database URL: expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, received"
            " something that is not a URL"
        ) from None
    if parsed.drivername in _DRIVERLESS:
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"database URL: expected a postgresql:// URL, received a {parsed.get_backend_name()!r} one"
        )
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, **options: Any) -> sa.Engine:
    """An engine for `url` (see `normalize_url`), with connections checked before use and the
    server's faults sorted where they are raised (`worker.storage.faults`: a read-only server
    drops the pool; a column or constraint this code does not know is `SchemaDriftError`)."""
    from worker.storage.faults import watch_faults  # noqa: PLC0415  (faults imports the tables)

    options.setdefault("pool_pre_ping", True)
    return watch_faults(sa.create_engine(normalize_url(url), **options))
