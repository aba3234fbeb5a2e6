"""Systemic faults stall, never skip: a fault that every frame meets is retried and reported, and no
good frame is dead-lettered for it — against the real PostgreSQL, broker and model.

- `failures.classify` reads PostgreSQL's SQLSTATE: a read-only transaction (a standby after a
  failover, a maintenance freeze) and a failed transaction are systemic, not a frame's data;
- the storage layer names schema drift (a NOT NULL column or a check this worker does not know)
  as `SchemaDriftError`, and drops the pool on a read-only server;
- the ledger writes a synthetic frame before blaming a frame, and the `IsolationGuard` stops a
  run of frames failing alike from going to the dead-letter topic;
- through the worker: a read-only window, a migration applied while it runs and a code fault
  every frame triggers each leave every good frame stored exactly once, none dead-lettered,
  `/readyz` 503 with the reason meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alert_strips import Defect, register, strip_results
from kafka import errors as kafka_errors
from sqlalchemy import exc as sa_exc
from streaming_harness import (
    end_offsets,
    frame_messages,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    wait_until,
    worker_settings,
)
from test_isolation import _entries

from worker.core.errors import SchemaDriftError, SystemicFaultError
from worker.core.failures import DATA, SYSTEMIC, TRANSIENT, classify, signature
from worker.model.artefact import Classifier
from worker.storage import writer as writer_module
from worker.storage.engine import create_engine
from worker.storage.writer import StorageWriter
from worker.streaming.batch import Batch
from worker.streaming.isolation import IsolationGuard
from worker.streaming.observability import Metrics
from worker.streaming.sinks import LedgerSink


def _database_name(url: str) -> str:
    return sa.engine.make_url(url).database or ""


@contextmanager
def _admin(url: str) -> Iterator[sa.Connection]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _end_sessions(conn: sa.Connection, database: str) -> None:
    """End every other session on `database` (what a failover does to the worker's connections)."""
    conn.execute(
        sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = :db AND pid <> pg_backend_pid()"
        ),
        {"db": database},
    )


def _sessions(url: str) -> list[tuple[Any, ...]]:
    """The database's sessions (for a failure's message): when each began, its state and read-only."""
    with _admin(url) as admin:
        rows = admin.execute(
            sa.text(
                "SELECT pid, backend_start, state, left(query, 60) FROM pg_stat_activity WHERE datname = :db"
            ),
            {"db": _database_name(url)},
        )
        read_only = admin.execute(sa.text("SHOW default_transaction_read_only")).scalar()
        return [*map(tuple, rows), ("a new session's default_transaction_read_only", read_only)]


@pytest.fixture
def writer(engine: sa.Engine) -> StorageWriter:
    writer = StorageWriter(engine)
    register(writer)
    return writer


# --- what an error means ------------------------------------------------------------------------------


def test_a_read_only_transaction_and_a_failed_transaction_are_systemic(engine: sa.Engine) -> None:
    """psycopg2 files both under InternalError, which used to read as the frame's data."""
    with engine.connect() as conn, pytest.raises(sa_exc.InternalError) as read_only:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        conn.execute(sa.text("INSERT INTO alert_strip_locks (strip_id) VALUES ('x')"))
    assert signature(read_only.value) == "InternalError/25006"
    assert classify(read_only.value) == SYSTEMIC

    with engine.connect() as conn:
        with pytest.raises(sa_exc.DataError):
            conn.execute(sa.text("SELECT 1 / 0"))
        with pytest.raises(sa_exc.InternalError) as failed:
            conn.execute(sa.text("SELECT 1"))
    assert signature(failed.value) == "InternalError/25P02"
    assert classify(failed.value) == SYSTEMIC


def test_sqlstates_sort_the_servers_faults_from_the_datas() -> None:
    """Classes 08/40/53/57/58 wait, 25/42/XX need people, 22/23 are a frame's."""

    class PgError(Exception):
        def __init__(self, code: str) -> None:
            self.pgcode = code

    def wrapped(code: str, kind: type[sa_exc.DBAPIError] = sa_exc.DBAPIError) -> sa_exc.DBAPIError:
        return kind("INSERT", {}, PgError(code))

    assert classify(wrapped("53100")) == TRANSIENT  # disk full
    assert classify(wrapped("40P01")) == TRANSIENT  # deadlock
    assert classify(wrapped("57014")) == TRANSIENT  # statement timeout
    assert classify(wrapped("55P03")) == TRANSIENT  # lock not available
    assert classify(wrapped("XX001")) == SYSTEMIC  # data corrupted
    assert classify(wrapped("0A000")) == SYSTEMIC  # feature not supported
    assert classify(wrapped("22021", sa_exc.DataError)) == DATA  # NUL in a text
    assert classify(wrapped("23514", sa_exc.IntegrityError)) == DATA  # a known check
    assert classify(SystemicFaultError("x")) == SYSTEMIC
    assert classify(kafka_errors.MessageSizeTooLargeError()) == DATA


def test_a_not_null_column_added_while_the_worker_runs_is_schema_drift(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    results = strip_results("S-DRIFT", [Defect(0.3, "holes")])[:2]
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE frames ADD COLUMN operator text NOT NULL DEFAULT 'x'"))
        conn.execute(sa.text("ALTER TABLE frames ALTER COLUMN operator DROP DEFAULT"))
    with pytest.raises(SchemaDriftError, match=r"frames\.operator is NOT NULL") as drift:
        writer.write_results(results)
    assert classify(drift.value) == SYSTEMIC


def test_a_check_this_worker_knows_is_the_frames_fault_and_one_it_does_not_know_is_drift(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    results = [r for r in strip_results("S-CHECK", [Defect(0.3, "holes")]) if r.detections]
    bad = replace(results[0], detections=(replace(results[0].detections[0], confidence=1.5),))
    with pytest.raises(sa_exc.IntegrityError) as known:
        writer.write_results([bad])
    assert classify(known.value) == DATA
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE frames ADD CONSTRAINT ck_frames_plant_rule CHECK (position_m < 0)"))
    with pytest.raises(SchemaDriftError, match="ck_frames_plant_rule"):
        writer.write_results(results)


def test_check_writable_writes_nothing_and_fails_on_a_read_only_server(
    writer: StorageWriter, engine: sa.Engine, database_url: str
) -> None:
    version = strip_results("S-CANARY", [Defect(0.3, "holes")])[0].model_version
    writer.check_writable(version)
    with engine.connect() as conn:
        for table in ("frames", "detections", "tile_images"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table
    with _admin(database_url) as admin:
        admin.execute(
            sa.text(f'ALTER DATABASE "{_database_name(database_url)}" SET default_transaction_read_only = on')
        )
        _end_sessions(admin, _database_name(database_url))
        try:
            with pytest.raises(sa_exc.InternalError) as read_only:
                writer.check_writable(version)
            assert classify(read_only.value) == SYSTEMIC
        finally:
            admin.execute(
                sa.text(
                    f'ALTER DATABASE "{_database_name(database_url)}" RESET default_transaction_read_only'
                )
            )
    writer.check_writable(version)  # the pool was dropped on the read-only error: a new session writes


# --- the ledger and the guard ---------------------------------------------------------------------------


def test_the_ledger_blames_no_frame_when_a_synthetic_frame_fails_too(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """A check added by a plant's own migration refuses every frame: the ledger's synthetic frame
    fails as well, so the batch is retried as systemic and nothing is set aside."""
    results = strip_results("S-ALL", [Defect(0.3 + 0.256 * k, "holes") for k in range(4)])[:4]
    with engine.begin() as conn:  # a known constraint name, so it reads as data, not drift
        conn.execute(sa.text("ALTER TABLE detections DROP CONSTRAINT ck_detections_confidence_range"))
        conn.execute(
            sa.text(
                "ALTER TABLE detections ADD CONSTRAINT ck_detections_confidence_range CHECK (confidence > 2)"
            )
        )
    metrics = Metrics()
    batch = Batch(_entries(results))
    with pytest.raises(SystemicFaultError, match="synthetic frame"):
        LedgerSink(writer, metrics).deliver(batch)
    assert not any(e.refused for e in batch.entries)
    assert metrics.value("steel_worker_isolated_total", {"step": "write"}) == 0


def test_the_guard_allows_limit_minus_one_frames_failing_alike_then_calls_it_systemic() -> None:
    guard = IsolationGuard(3)
    error = sa_exc.IntegrityError("INSERT", {}, Exception("x"))
    guard.judge("write", [error], delivered=False)
    guard.judge("write", [error], delivered=False)
    with pytest.raises(SystemicFaultError, match="last 3 frames failed alike"):
        guard.judge("write", [error], delivered=False)
    with pytest.raises(SystemicFaultError):  # nothing was recorded: still systemic
        guard.judge("write", [error], delivered=False)
    guard.delivered("write")
    guard.judge("write", [error, error], delivered=False)
    # frames refused beside frames delivered in the same batch are their own fault, however many
    guard.judge("write", [error] * 10, delivered=True)
    with pytest.raises(SystemicFaultError):  # a whole batch failing alike: none of it set aside
        guard.judge("write", [error] * 3, delivered=False)
    other = ValueError("y")
    guard.judge("publish", [error, other, error], delivered=False)  # a mixed run starts again


def test_a_code_fault_every_frame_triggers_is_systemic_at_the_ledger(
    writer: StorageWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = strip_results("S-BUG", [Defect(0.3, "holes")])[:3]

    def broken(result: Any) -> dict[str, Any]:
        raise KeyError("a field this code forgot")

    monkeypatch.setattr(writer_module, "_frame_row", broken)
    batch = Batch(_entries(results))
    with pytest.raises(SystemicFaultError):
        LedgerSink(writer, Metrics()).deliver(batch)
    assert not any(e.refused for e in batch.entries)


# --- through the worker -----------------------------------------------------------------------------------


def _no_dead_letters(bootstrap: str, dlq: str) -> None:
    assert end_offsets(bootstrap, dlq) == {0: 0}, read_topic(bootstrap, dlq, at_least=1, timeout_s=2)


def _failing(running: Any) -> dict[str, Any]:
    ready, body = running.worker.health.readiness()
    assert not ready
    return body.get("failing") or {}


def test_a_read_only_window_stalls_the_worker_and_stores_every_frame_once_afterwards(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """The database turns read-only (a failover to a standby, a maintenance freeze) with the alert
    rules off: the worker retries, /readyz says why, and nothing is dead-lettered."""
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics, alert_rules="none")
    messages = frame_messages(30, size=(256, 256))
    stream = list(messages.values())
    database = _database_name(database_url)
    with running_worker(settings, classifier) as running, _admin(database_url) as admin:
        publish(broker.bootstrap_servers, topics.frames, stream[:5])
        wait_until(lambda: len(ledger(database_url)) == 5, 60, "the first frames")
        admin.execute(sa.text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
        _end_sessions(admin, database)
        try:
            publish(broker.bootstrap_servers, topics.frames, stream[5:])
            metrics = running.worker.metrics
            wait_until(
                lambda: metrics.value("steel_worker_retries_total", {"step": "write"}) >= 2, 30, "retries"
            )
            failing = _failing(running)
            assert failing["step"] == "write" and failing["needs_attention"] is True
            assert "read-only" in failing["error"]
            time.sleep(1)
            assert len(ledger(database_url)) == 5
        finally:
            admin.execute(sa.text(f'ALTER DATABASE "{database}" RESET default_transaction_read_only'))
        wait_until(
            lambda: len(ledger(database_url)) == 30,
            60,
            lambda: f"every frame after the window; the sessions now: {_sessions(database_url)}",
        )
        wait_until(lambda: running.worker.health.readiness()[0], 20, "/readyz 200 again")
    assert sorted(r.frame_id for r in ledger(database_url)) == sorted(messages)
    _no_dead_letters(broker.bootstrap_servers, topics.dlq)
    assert running.worker.metrics.value("steel_worker_isolated_total", {"step": "write"}) == 0


def test_a_migration_applied_while_the_worker_runs_stalls_it_with_the_reason_and_loses_nothing(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """A newer release's migration adds a NOT NULL column (and its revision) under a running worker:
    every write fails until the column gets a default; /readyz names the drift and the revision."""
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    messages = frame_messages(16, size=(256, 256))
    stream = list(messages.values())
    with running_worker(settings, classifier) as running, _admin(database_url) as admin:
        publish(broker.bootstrap_servers, topics.frames, stream[:4])
        wait_until(lambda: len(ledger(database_url)) == 4, 60, "the first frames")
        (revision,) = admin.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
        admin.execute(sa.text("ALTER TABLE frames ADD COLUMN operator text NOT NULL DEFAULT 'x'"))
        admin.execute(sa.text("ALTER TABLE frames ALTER COLUMN operator DROP DEFAULT"))
        admin.execute(sa.text("UPDATE alembic_version SET version_num = '9999_newer_release'"))
        publish(broker.bootstrap_servers, topics.frames, stream[4:])
        wait_until(
            lambda: "diagnosis" in (running.worker.health.readiness()[1].get("failing") or {}),
            30,
            "diagnosis",
        )
        failing = _failing(running)
        assert "frames.operator" in failing["error"] and failing["needs_attention"] is True
        assert "9999_newer_release" in failing["diagnosis"]
        assert "upgrade this worker" in failing["diagnosis"]
        assert len(ledger(database_url)) == 4
        admin.execute(sa.text("ALTER TABLE frames ALTER COLUMN operator SET DEFAULT 'unknown'"))
        admin.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
        wait_until(lambda: len(ledger(database_url)) == 16, 60, "every frame once the column has a default")
    assert sorted(r.frame_id for r in ledger(database_url)) == sorted(messages)
    _no_dead_letters(broker.bootstrap_servers, topics.dlq)


def test_a_code_fault_every_frame_triggers_stalls_the_worker_and_loses_nothing(
    broker,
    make_topic,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    model_dir: Path,
    classifier: Classifier,
) -> None:
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    messages = frame_messages(12, size=(256, 256))
    stream = list(messages.values())
    original = writer_module._frame_row

    def broken(result: Any) -> dict[str, Any]:
        raise TypeError("a fault of this code that every frame meets")

    with running_worker(settings, classifier) as running:
        publish(broker.bootstrap_servers, topics.frames, stream[:3])
        wait_until(lambda: len(ledger(database_url)) == 3, 60, "the first frames")
        monkeypatch.setattr(writer_module, "_frame_row", broken)
        publish(broker.bootstrap_servers, topics.frames, stream[3:])
        metrics = running.worker.metrics
        wait_until(lambda: metrics.value("steel_worker_retries_total", {"step": "write"}) >= 2, 30, "retries")
        assert "TypeError" in _failing(running)["error"]
        monkeypatch.setattr(writer_module, "_frame_row", original)
        wait_until(lambda: len(ledger(database_url)) == 12, 60, "every frame once the fault is mended")
    _no_dead_letters(broker.bootstrap_servers, topics.dlq)
