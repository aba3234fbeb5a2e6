"""The month partitions of `tile_images`, and retention by whole months.

`tile_images` is partitioned by RANGE of `created_at` (revision 0005): one partition per calendar
month in UTC, named `tile_images_<YYYY>_<MM>`, and the default partition `tile_images_default`,
which holds any row no month partition takes — so an insert never fails for want of a partition.

- `ensure_months(engine, months_ahead)` makes the partitions of this month and the next
  `months_ahead` ones when missing (`steel-worker db partitions`; `db upgrade` runs it too). Rows
  the default partition already holds for such a month are moved into it, in the same
  transaction (PostgreSQL refuses to add a partition whose rows sit in the default one).
- `prune(engine, older_than, dry_run)` drops the month partitions that lie wholly before
  now − `older_than`, and deletes the default partition's rows older than that
  (`steel-worker db prune`). Whole months go at once, so a crop is kept for `older_than` at least
  and at most about one month longer. Detections and frames are not touched. A drop needs an
  ACCESS EXCLUSIVE lock on `tile_images`, and the worker's inserts queue behind a drop that
  waits for it: each drop waits at most a short lock timeout, is not even tried while a session
  idle in its transaction holds a lock on the table, and is tried again a bounded number of times
  (`worker.storage.locks`); the worker's inserts are held up at most one lock timeout at a time.

Both need the table's owner (the role that ran `db upgrade`), not the worker's role, which has no
DDL privilege.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from worker.core.errors import ConfigError, LockTimeoutError
from worker.storage.locks import LockPolicy, with_lock_retries
from worker.storage.tables import TILE_IMAGES_PARTITION_PREFIX

PARENT = "tile_images"
#: Month partitions made ahead by `db upgrade`, `db partitions` and the demo.
DEFAULT_MONTHS_AHEAD = 3
DEFAULT_PARTITION = f"{TILE_IMAGES_PARTITION_PREFIX}default"
_MONTH_NAME = re.compile(rf"^{TILE_IMAGES_PARTITION_PREFIX}(\d{{4}})_(\d{{2}})$")


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month holding `moment`."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    """`tile_images_2026_11` for the month starting at `start`."""
    return f"{TILE_IMAGES_PARTITION_PREFIX}{start.year:04d}_{start.month:02d}"


@dataclass(frozen=True)
class Partition:
    """A partition of `tile_images`: name, month bounds (None for the default one), rows, bytes."""

    name: str
    start: datetime | None
    end: datetime | None
    rows: int
    bytes: int


def partitions(conn: sa.Connection) -> list[Partition]:
    """The partitions of `tile_images`, months in order, the default one last."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    ).scalars()
    found = []
    for name in names:
        match = _MONTH_NAME.match(name)
        start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC) if match else None
        rows, size = conn.execute(
            sa.text(f'SELECT count(*), pg_total_relation_size(CAST(:name AS regclass)) FROM "{name}"'),
            {"name": name},
        ).one()
        found.append(Partition(name, start, next_month(start) if start else None, int(rows), int(size)))
    return sorted(found, key=lambda p: (p.start is None, p.start or datetime.min.replace(tzinfo=UTC), p.name))


def ensure_months(
    engine: sa.Engine, months_ahead: int = DEFAULT_MONTHS_AHEAD, *, now: datetime | None = None
) -> list[str]:
    """Make the month partitions from this month through `months_ahead` months ahead where missing
    (moving the default partition's rows of those months into them); the names made."""
    if months_ahead < 0:
        raise ConfigError(f"--months-ahead: expected 0 or more months, received {months_ahead}")
    start = month_start(now or datetime.now(UTC))
    made = []
    with engine.begin() as conn:
        existing = {p.name for p in partitions(conn)}
        for _ in range(months_ahead + 1):
            name = partition_name(start)
            if name not in existing:
                _make_month(conn, name, start, next_month(start))
                made.append(name)
            start = next_month(start)
    return made


def ensure_months_at(database_url: str, months_ahead: int = DEFAULT_MONTHS_AHEAD) -> list[str]:
    """`ensure_months` on the database at `database_url` (what `db upgrade` and the demo run)."""
    from worker.storage.engine import create_engine  # noqa: PLC0415

    engine = create_engine(database_url)
    try:
        return ensure_months(engine, months_ahead)
    finally:
        engine.dispose()


def _make_month(conn: sa.Connection, name: str, start: datetime, end: datetime) -> None:
    bounds = {"lo": start, "hi": end}
    conn.execute(sa.text(f'CREATE TABLE "{name}" (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'))
    conn.execute(
        sa.text(
            f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE created_at >= :lo AND created_at < :hi'
            f' RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'
        ),
        bounds,
    )
    lo, hi = (moment.isoformat() for moment in (start, end))
    conn.execute(
        sa.text(f"ALTER TABLE {PARENT} ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{lo}') TO ('{hi}')")
    )


@dataclass(frozen=True)
class PruneReport:
    """What `prune` dropped (or, on a dry run, would drop): month partitions, and rows of the
    default partition older than `cutoff`."""

    cutoff: datetime
    dropped: tuple[Partition, ...]
    default_rows: int
    dry_run: bool

    def describe(self) -> str:
        verb = "would drop" if self.dry_run else "dropped"
        lines = [f"crops stored before {self.cutoff.isoformat()}:"]
        for p in self.dropped:
            lines.append(f"  {verb} {p.name}: {p.rows} crops, {p.bytes / 1e6:.1f} MB")
        removed = "would delete" if self.dry_run else "deleted"
        lines.append(f"  {removed} {self.default_rows} crops from {DEFAULT_PARTITION}")
        if not self.dropped and not self.default_rows:
            lines.append("  nothing is that old")
        return "\n".join(lines)


def prune(
    engine: sa.Engine,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    lock: LockPolicy | None = None,
    notify: Callable[[str], None] = lambda line: None,
) -> PruneReport:
    """Drop what `tile_images` holds from before now − `older_than` (see the module doc).

    Each partition is dropped in a transaction of its own, oldest first, and the default
    partition's old rows are deleted in another, each with bounded lock waits and retries
    (`lock`, see `worker.storage.locks`): a worker's insert queued behind a drop waits at most
    `lock.lock_timeout_ms`. LockTimeoutError when a drop never got its lock; it names the
    sessions that held it and what this run had dropped before it (which stays dropped).
    """
    if older_than <= timedelta(0):
        raise ConfigError(f"--older-than: expected a positive age, received {older_than}")
    cutoff = (now or datetime.now(UTC)) - older_than
    with engine.connect() as conn:  # a survey: no lock stronger than reading
        old = tuple(p for p in partitions(conn) if p.end is not None and p.end <= cutoff)
        rows = int(
            conn.execute(
                sa.text(f'SELECT count(*) FROM "{DEFAULT_PARTITION}" WHERE created_at < :cutoff'),
                {"cutoff": cutoff},
            ).scalar_one()
        )
    if dry_run:
        return PruneReport(cutoff, old, rows, dry_run)
    policy = lock or LockPolicy()
    dropped: list[str] = []
    for p in old:
        try:
            with_lock_retries(
                engine,
                functools.partial(_drop, name=p.name),
                [PARENT, p.name],
                policy,
                what=f"prune: drop {p.name}",
                notify=notify,
            )
        except LockTimeoutError as exc:
            if not dropped:
                raise
            raise LockTimeoutError(f"{exc} Dropped before it (and gone): {', '.join(dropped)}.") from None
        dropped.append(p.name)
    deleted = with_lock_retries(
        engine,
        functools.partial(_delete_default_rows, cutoff=cutoff),
        [PARENT, DEFAULT_PARTITION],
        policy,
        what=f"prune: delete old crops from {DEFAULT_PARTITION}",
        notify=notify,
    )
    return PruneReport(cutoff, old, deleted, dry_run)


def _drop(conn: sa.Connection, *, name: str) -> None:
    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))


def _delete_default_rows(conn: sa.Connection, *, cutoff: datetime) -> int:
    deleted = conn.execute(
        sa.text(f'DELETE FROM "{DEFAULT_PARTITION}" WHERE created_at < :cutoff'), {"cutoff": cutoff}
    )
    return int(deleted.rowcount)


_AGE = re.compile(r"^\s*([0-9]{1,5})\s*([hdw])\s*$", re.ASCII)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """`90d`, `12w` or `36h` as a timedelta; ConfigError otherwise."""
    match = _AGE.match(text.lower())
    if not match or int(match[1]) == 0:
        raise ConfigError(f"--older-than: expected a positive age such as 90d, 12w or 36h, received {text!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})
