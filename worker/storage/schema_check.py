"""The worker's start-up check: refuse to run against a database whose schema is not this code's."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError

from worker.core.errors import SchemaError
from worker.storage.migrate import alembic_config, head_revision


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except (RevisionError, CommandError):
        return False


def assert_schema_current(engine: sa.Engine) -> str:
    """Return the database's revision when it is the migrations' head; SchemaError otherwise.

    Behind (or empty): the message says to run `steel-worker db upgrade`. Ahead (a revision this
    code does not know, written by a newer worker): the message says to upgrade the worker.
    """
    needed = head_revision()
    with engine.connect() as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
    current = heads[0] if len(heads) == 1 else None
    if current == needed:
        return needed
    if len(heads) > 1:
        raise SchemaError(f"database schema has several revisions applied at once: {sorted(heads)}")
    if current is None:
        raise SchemaError(
            f"database schema is at revision none (no migrations applied), this worker needs"
            f" {needed}: run `steel-worker db upgrade`"
        )
    if not _known(current):
        raise SchemaError(
            f"database schema is at revision {current}, which this worker does not know (it needs"
            f" {needed}): the database was migrated by a newer steel-worker; upgrade this worker"
        )
    raise SchemaError(
        f"database schema is at revision {current}, this worker needs {needed}: run `steel-worker db upgrade`"
    )


def schema_diagnosis(engine: sa.Engine) -> str | None:
    """None while the database's schema is this code's; else what `assert_schema_current` says
    (the worker checks again on each retry of a systemic fault: a migration applied while it
    runs shows up here by its revision)."""
    try:
        assert_schema_current(engine)
    except SchemaError as error:
        return str(error)
    return None
