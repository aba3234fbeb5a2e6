"""Alembic environment for the defect database.

The database URL comes, in order, from `config.attributes["database_url"]` (set by
`worker.storage.migrate`), the `sqlalchemy.url` option, or `$DATABASE_URL`. A caller may instead
hand over an open connection in `config.attributes["connection"]`. Autogenerate and `alembic
check` compare the migrations with `worker.storage.tables.metadata`.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from worker.core.errors import ConfigError
from worker.storage.engine import create_engine, normalize_url
from worker.storage.tables import TILE_IMAGES_PARTITION_PREFIX, metadata

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise ConfigError(
            "no database to migrate: set DATABASE_URL (postgresql://USER@HOST:PORT/DATABASE)"
            " or pass --database-url"
        )
    return normalize_url(url)


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave the partitions of `tile_images` out of the comparison: they are made and dropped by
    `worker.storage.partitions` at run time, not by the migrations."""
    is_partition = type_ == "table" and reflected and (name or "").startswith(TILE_IMAGES_PARTITION_PREFIX)
    return not is_partition


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        include_object=_include_object,
        **options,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (`alembic upgrade head --sql`)."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection)
        return
    engine = create_engine(_database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run_online(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
