"""What the database's errors say about the server, read where SQLAlchemy raises them.

`watch_faults(engine)` installs one `handle_error` listener on an engine:

- **Read-only** (SQLSTATE 25006: a standby reached after a failover, `default_transaction_read_only`
  during a maintenance freeze): the connection is treated as lost, so SQLAlchemy discards the
  pool and the next attempt connects again — to the new primary once the failover's address
  moved. The error itself is systemic (`worker.core.failures`): retried, never a frame's fault.
- **Schema drift** (SQLSTATE 23502 on a column, 23514 on a check constraint, that this code's
  tables do not have): the statement met a schema migrated while the worker runs — a new NOT NULL
  column without a default, a new check. Raised as `SchemaDriftError` (systemic) naming the
  table, the column or constraint and what to do, instead of an IntegrityError that would make
  every frame look bad.

Both only sort errors; nothing is retried or swallowed here.
"""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import ExceptionContext

from worker.core.errors import SchemaDriftError
from worker.core.failures import sqlstate
from worker.storage.tables import metadata

READ_ONLY_TRANSACTION = "25006"
NOT_NULL_VIOLATION = "23502"
CHECK_VIOLATION = "23514"


def watch_faults(engine: sa.Engine) -> sa.Engine:
    """Install the listener (see the module doc) on a new `engine`; returns it. (No `event.contains`
    guard: SQLAlchemy keys its registry by `id(target)`, and a new engine that reuses a collected
    one's id would be taken for it and left without the listener.)"""
    sa.event.listen(engine, "handle_error", _on_error, retval=True)
    return engine


def _on_error(context: ExceptionContext) -> BaseException | None:
    code = sqlstate(context.original_exception)
    if code == READ_ONLY_TRANSACTION:
        context.is_disconnect = True  # discard the pool: the next connection may reach the primary
        return None
    if code in (NOT_NULL_VIOLATION, CHECK_VIOLATION):
        drift = schema_drift(context.original_exception)
        if drift is not None:
            raised = SchemaDriftError(drift)
            raised.__cause__ = context.sqlalchemy_exception or context.original_exception
            return raised
    return None


def schema_drift(original: BaseException) -> str | None:
    """A sentence when a not-null or check violation names a column or constraint that this
    code's schema lacks; None when the schema knows it (then it is the row's fault)."""
    diag = getattr(original, "diag", None)
    table = getattr(diag, "table_name", None)
    column = getattr(diag, "column_name", None)
    constraint = getattr(diag, "constraint_name", None)
    known = metadata.tables.get(table) if table else None
    if known is None:
        return None  # a table of its own (a partition, a view): nothing to compare with
    if sqlstate(original) == NOT_NULL_VIOLATION and column and column not in known.c:
        return (
            f"schema drift: {table}.{column} is NOT NULL without a default, and this worker does not"
            " know that column (a migration newer than this worker was applied while it runs):"
            " upgrade the worker, or give the column a default"
        )
    if sqlstate(original) == CHECK_VIOLATION and constraint and constraint not in _check_names(table):
        return (
            f"schema drift: check constraint {constraint} on {table} is not in this worker's schema (a"
            " migration newer than this worker was applied while it runs): upgrade the worker, or"
            " drop the constraint"
        )
    return None


@cache
def _check_names(table: str) -> frozenset[str]:
    """The names of the check constraints of `table` as the migrations create them."""
    ddl = str(sa.schema.CreateTable(metadata.tables[table]).compile(dialect=postgresql.dialect()))
    names = set()
    for line in ddl.splitlines():
        words = line.strip().split()
        if len(words) > 2 and words[0] == "CONSTRAINT" and words[2] == "CHECK":
            names.add(words[1])
    return frozenset(names)
