"""Bounded waits for the heavy locks of maintenance commands (`steel-worker db prune`).

A `DROP TABLE` of a partition needs an ACCESS EXCLUSIVE lock on the partition and on its parent.
While it waits for one, PostgreSQL queues every later lock request behind it — the worker's
INSERTs into the parent included — so a maintenance statement that waits without a limit behind
an analyst's idle transaction stops ingestion for as long as that transaction stays open.

`with_lock_retries(engine, action, relations, policy)` runs `action` in a transaction of its own
whose lock waits are bounded, and tries again a bounded number of times:

- Each attempt begins with `SET LOCAL lock_timeout` (`LockPolicy.lock_timeout_ms`): a worker's
  write queued behind the attempt waits at most that long, then goes through when the attempt
  gives up and rolls back.
- Before an attempt it looks at who holds a lock on `relations` (`pg_locks` joined to
  `pg_stat_activity`). If a holder has been idle in its transaction for longer than the lock
  timeout, the attempt is not made at all (it would most likely time out, and make the worker
  wait for nothing); it counts as an attempt. Where this role may not see other sessions' states
  (not a superuser, not `pg_read_all_stats`), every attempt is made.
- After an attempt that timed out it looks again: a transaction that held a lock at both moments
  (the same `pg_locks.virtualtransaction`) is what it names as the holder — not the worker's short
  transactions, which queued behind the attempt and came and went.
- Between attempts it pauses `backoff_s`, doubling up to `backoff_cap_s`; it stops after
  `attempts` attempts or when the next pause would end past `max_wait_s` from the start,
  whichever comes first, and raises `LockTimeoutError` naming what held the lock (pid, user,
  application, state and for how long) and how to end it. Nothing of a failed attempt is kept:
  its transaction is rolled back whole.
- Errors other than a lock timeout (SQLSTATE 55P03) propagate unchanged, at the first attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from worker.core.errors import ConfigError, LockTimeoutError

T = TypeVar("T")

#: SQLSTATE of `lock_not_available`: a lock wait ran past lock_timeout (or NOWAIT failed).
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class LockPolicy:
    """How long one attempt may wait for its locks, and how often and how long to try again."""

    lock_timeout_ms: int = 2_000
    attempts: int = 20
    max_wait_s: float = 600.0
    backoff_s: float = 1.0
    backoff_cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.lock_timeout_ms < 1:
            raise ConfigError(f"lock timeout: expected 1 ms or more, received {self.lock_timeout_ms}")
        if self.attempts < 1:
            raise ConfigError(f"attempts: expected 1 or more, received {self.attempts}")
        if not self.max_wait_s >= 0:  # NaN too
            raise ConfigError(f"max wait: expected 0 s or more, received {self.max_wait_s}")
        if not 0 <= self.backoff_s <= self.backoff_cap_s:
            raise ConfigError(
                f"backoff: expected 0 <= first pause <= longest pause, received {self.backoff_s} and"
                f" {self.backoff_cap_s}"
            )

    def pause_s(self, attempt: int) -> float:
        """The pause after failed attempt number `attempt` (1, 2, …)."""
        return float(min(self.backoff_cap_s, self.backoff_s * 2 ** min(attempt - 1, 30)))


@dataclass(frozen=True)
class Holder:
    """A session holding a lock on one of the relations; None where this role may not see it."""

    pid: int
    user: str | None
    application: str | None
    state: str | None
    state_s: float | None  # seconds in `state`
    transaction_s: float | None  # seconds since its transaction began
    relations: tuple[str, ...]
    modes: tuple[str, ...]
    transaction: str = ""  # pg_locks.virtualtransaction: the same value is the same transaction

    @property
    def idle_in_transaction(self) -> bool:
        return bool(self.state and self.state.startswith("idle in transaction"))

    def describe(self) -> str:
        who = f"user {self.user or '?'}, application {self.application or '(none)'}"
        if self.state is None:
            doing = "its state is not visible to this role"
        elif self.state_s is not None:
            doing = f"{self.state} for {self.state_s:.0f} s"
        else:
            doing = self.state
        if self.transaction_s is not None and self.state != "idle":
            doing += f", transaction open for {self.transaction_s:.0f} s"
        return f"pid {self.pid} ({who}; {doing}; holds {'/'.join(self.modes)} on {', '.join(self.relations)})"


def holders(conn: sa.Connection, relations: Sequence[str]) -> list[Holder]:
    """The other sessions that hold a granted lock on any of `relations` (names), by pid."""
    rows = conn.execute(
        sa.text(
            "SELECT l.pid, l.virtualtransaction, a.usename, a.application_name, a.state,"
            " extract(epoch FROM clock_timestamp() - a.state_change) AS state_s,"
            " extract(epoch FROM clock_timestamp() - a.xact_start) AS transaction_s,"
            " array_agg(DISTINCT c.relname::text) AS relations, array_agg(DISTINCT l.mode) AS modes"
            " FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation"
            " LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid"
            " WHERE l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation'"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.relation IN (SELECT to_regclass(n) FROM unnest(CAST(:names AS text[])) AS n)"
            " GROUP BY l.pid, l.virtualtransaction, a.usename, a.application_name, a.state,"
            " a.state_change, a.xact_start"
            " ORDER BY l.pid"
        ),
        {"names": [f'"{name}"' for name in relations]},
    )
    return [
        Holder(
            pid=int(r.pid),
            user=r.usename,
            application=r.application_name,
            state=r.state,
            state_s=None if r.state_s is None else float(r.state_s),
            transaction_s=None if r.transaction_s is None else float(r.transaction_s),
            relations=tuple(sorted(r.relations)),
            modes=tuple(sorted(r.modes)),
            transaction=str(r.virtualtransaction),
        )
        for r in rows
    ]


def _holders(engine: sa.Engine, relations: Sequence[str]) -> list[Holder]:
    with engine.connect() as conn:
        return holders(conn, relations)


def _is_lock_timeout(exc: sa.exc.DBAPIError) -> bool:
    return getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE


def with_lock_retries(
    engine: sa.Engine,
    action: Callable[[sa.Connection], T],
    relations: Sequence[str],
    policy: LockPolicy,
    *,
    what: str,
    notify: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`action(conn)`'s result, run in one transaction with bounded lock waits (see the module doc).

    `what` names the work in messages ("drop tile_images_2026_06"); `notify` receives one line
    per attempt that did not get its locks. LockTimeoutError when no attempt got them.
    """
    started = clock()
    timeout_s = policy.lock_timeout_ms / 1000
    attempt = 0
    seen: list[Holder] = []
    while True:
        attempt += 1
        before = _holders(engine, relations)
        idle = [h for h in before if h.idle_in_transaction and (h.state_s or 0) > timeout_s]
        if idle:
            seen, outcome = idle, "not tried: a session idle in its transaction holds a lock"
        else:
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.text("SELECT set_config('lock_timeout', :ms, true)"),
                        {"ms": f"{policy.lock_timeout_ms}ms"},
                    )
                    return action(conn)
            except sa.exc.OperationalError as exc:
                if not _is_lock_timeout(exc):
                    raise
            # what held a lock throughout the attempt: the same transaction before and after it (the
            # worker's short transactions, queued behind the attempt, come and go in between)
            earlier = {h.transaction for h in before}
            seen = [h for h in _holders(engine, relations) if h.transaction in earlier]
            outcome = f"no lock within {policy.lock_timeout_ms} ms"
        pause = policy.pause_s(attempt)
        held = "; ".join(h.describe() for h in seen) or "no one transaction held it throughout: a busy table"
        if attempt >= policy.attempts or clock() - started + pause > policy.max_wait_s:
            break
        notify(f"{what}: attempt {attempt} of {policy.attempts}: {outcome} ({held}); again in {pause:g} s")
        sleep(pause)
    pids = ", ".join(str(h.pid) for h in seen)
    ending = (
        f" End them with SELECT pg_terminate_backend(pid) for pid {pids}, or run the command again later."
        if seen
        else " Run the command again later."
    )
    raise LockTimeoutError(
        f"{what}: expected to lock {', '.join(relations)} within {policy.lock_timeout_ms} ms per"
        f" attempt, but {attempt} attempts over {clock() - started:.0f} s did not get the lock"
        f" (limits: {policy.attempts} attempts, {policy.max_wait_s:g} s); held by: {held}.{ending}"
        f" Nothing of {what} was done."
    )
