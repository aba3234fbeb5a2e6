"""The month partitions of tile_images (`worker.storage.partitions`) and `steel-worker db
partitions` / `db prune`, on real PostgreSQL: rows land in their month, the default partition
catches the rest and gives them up when their month is made, prune drops what is old and nothing
else, and holds the worker's inserts up at most one short lock timeout at a time while an
analyst's transaction holds a lock on the table."""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from worker.cli import main
from worker.core.errors import ConfigError
from worker.core.records import FrameResult, KafkaCoordinates, TileImage
from worker.storage import command, partitions
from worker.storage.locks import LockPolicy
from worker.storage.partitions import DEFAULT_PARTITION, ensure_months, parse_age, prune

NOW = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)


def _frame(conn: sa.Connection, frame_id: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO models (version, backbone, input_size, class_names, thresholds, metrics)"
            " VALUES ('m', 'resnet50', 64, '{holes}', '{}', '{}') ON CONFLICT DO NOTHING"
        )
    )
    conn.execute(
        sa.text(
            "INSERT INTO frames (frame_id, strip_id, line, camera, surface, captured_at, position_m,"
            " model_version, kafka_topic, kafka_partition, kafka_offset, tile_count, detection_count,"
            " processed_at) VALUES (:f, 'S1', 'L1', 'c', 'top', now(), 0, 'm', 't', 0, 0, 1, 0, now())"
        ),
        {"f": frame_id},
    )


def _crop(engine: sa.Engine, frame_id: str, created_at: datetime) -> None:
    with engine.begin() as conn:
        _frame(conn, frame_id)
        conn.execute(
            sa.text(
                "INSERT INTO tile_images (frame_id, tile_index, created_at, x, y, size, width, height,"
                " sampled, content_type, image)"
                " VALUES (:f, 0, :at, 0, 0, 64, 64, 64, false, 'image/jpeg', '\\xffd8ff'::bytea)"
            ),
            {"f": frame_id, "at": created_at},
        )


def _where(engine: sa.Engine) -> dict[str, str]:
    """frame id → the partition that holds its crop."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, tableoid::regclass::text FROM tile_images"))
        return {r[0]: r[1] for r in rows}


def test_month_partitions_are_made_ahead_and_rows_land_in_their_month(engine: sa.Engine) -> None:
    made = ensure_months(engine, 2, now=NOW)
    assert made == ["tile_images_2026_11", "tile_images_2026_12", "tile_images_2027_01"]
    assert ensure_months(engine, 2, now=NOW) == []  # idempotent
    _crop(engine, "nov", datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    _crop(engine, "dec", datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    _crop(engine, "far", datetime(2031, 5, 1, tzinfo=UTC))  # no month made: the default takes it
    assert _where(engine) == {
        "nov": "tile_images_2026_11",
        "dec": "tile_images_2026_12",
        "far": DEFAULT_PARTITION,
    }
    with engine.connect() as conn:
        listed = [(p.name, p.rows) for p in partitions.partitions(conn)]
    assert listed == [
        ("tile_images_2026_11", 1),
        ("tile_images_2026_12", 1),
        ("tile_images_2027_01", 0),
        (DEFAULT_PARTITION, 1),
    ]


def test_a_month_made_late_takes_its_rows_from_the_default_partition(engine: sa.Engine) -> None:
    _crop(engine, "early", datetime(2026, 11, 3, tzinfo=UTC))
    _crop(engine, "later", datetime(2027, 3, 3, tzinfo=UTC))
    assert set(_where(engine).values()) == {DEFAULT_PARTITION}
    ensure_months(engine, 0, now=NOW)
    assert _where(engine) == {"early": "tile_images_2026_11", "later": DEFAULT_PARTITION}
    with engine.connect() as conn:  # the crop is whole after the move
        image = conn.execute(sa.text("SELECT image FROM tile_images WHERE frame_id = 'early'")).scalar()
        assert bytes(image) == b"\xff\xd8\xff"


def test_prune_drops_whole_old_months_and_old_default_rows_and_nothing_else(engine: sa.Engine) -> None:
    ensure_months(engine, 0, now=datetime(2026, 6, 15, tzinfo=UTC))  # June
    ensure_months(engine, 0, now=datetime(2026, 8, 15, tzinfo=UTC))  # August
    ensure_months(engine, 0, now=NOW)  # November
    _crop(engine, "june", datetime(2026, 6, 20, tzinfo=UTC))
    _crop(engine, "august", datetime(2026, 8, 20, tzinfo=UTC))  # the cutoff falls in August
    _crop(engine, "november", datetime(2026, 11, 20, tzinfo=UTC))
    _crop(engine, "old-default", datetime(2026, 4, 1, tzinfo=UTC))
    _crop(engine, "new-default", datetime(2026, 10, 1, tzinfo=UTC))

    dry = prune(engine, timedelta(days=100), dry_run=True, now=NOW)  # cutoff 2026-08-22
    assert [p.name for p in dry.dropped] == ["tile_images_2026_06"] and dry.default_rows == 1
    assert "would drop tile_images_2026_06: 1 crops" in dry.describe()
    assert set(_where(engine)) == {"june", "august", "november", "old-default", "new-default"}

    report = prune(engine, timedelta(days=100), now=NOW)
    assert [p.name for p in report.dropped] == ["tile_images_2026_06"] and report.default_rows == 1
    assert set(_where(engine)) == {"august", "november", "new-default"}
    with engine.connect() as conn:
        names = [p.name for p in partitions.partitions(conn)]
        assert names == ["tile_images_2026_08", "tile_images_2026_11", DEFAULT_PARTITION]
        assert conn.execute(sa.text("SELECT count(*) FROM frames")).scalar() == 5  # frames stay


@pytest.mark.parametrize(
    ("text", "age"),
    [("90d", timedelta(days=90)), ("12w", timedelta(weeks=12)), (" 36H ", timedelta(hours=36))],
)
def test_ages_read_as_days_weeks_or_hours(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize(
    "text", ["", "90", "0d", "-5d", "5y", "1e3d", "90 days", "९०d", "9999999999d", "100000d"]
)
def test_an_age_that_is_not_one_says_what_was_expected(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a positive age such as 90d"):
        parse_age(text)


def test_a_negative_number_of_months_is_refused(engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="--months-ahead"):
        ensure_months(engine, -1)


def _db(url: str, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["db", "--database-url", url, *argv])
    return int(args.func(args))


def test_db_upgrade_makes_the_months_ahead_and_the_commands_list_and_prune(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _db(empty_database_url, "upgrade") == 0
    out = capsys.readouterr().out
    this_month = partitions.partition_name(partitions.month_start(datetime.now(UTC)))
    assert f"tile_images: made partitions {this_month}" in out
    assert _db(empty_database_url, "partitions", "--months-ahead", "4") == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("made ")
        and f"  {this_month}: 0 crops" in out
        and f"  {DEFAULT_PARTITION}: 0 crops" in out
    )
    assert _db(empty_database_url, "prune", "--older-than", "90d", "--dry-run") == 0
    assert "nothing is that old" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="positive age"):
        _db(empty_database_url, "prune", "--older-than", "soon")


def test_the_command_and_the_module_agree_on_the_months_made_ahead() -> None:
    assert command.DEFAULT_MONTHS_AHEAD == partitions.DEFAULT_MONTHS_AHEAD


# ---------------------------------------------------------------------------------------------
# prune beside the worker: bounded lock waits (issue 20, item 8)
# ---------------------------------------------------------------------------------------------


class _Ingestion:
    """The worker's writer (its login, its connection settings) storing a frame with a crop every
    50 ms in a thread; `longest_s` is the longest write."""

    def __init__(self, worker_database_url: str) -> None:
        from alert_strips import register  # noqa: PLC0415

        from worker.storage.engine import create_engine  # noqa: PLC0415
        from worker.storage.writer import StorageWriter  # noqa: PLC0415
        from worker.streaming.service import DATABASE_CONNECT_ARGS  # noqa: PLC0415

        options = "-c lock_timeout=10000 -c statement_timeout=30000"  # the worker's defaults
        self.engine = create_engine(
            worker_database_url, connect_args={**DATABASE_CONNECT_ARGS, "options": options}
        )
        self.writer = StorageWriter(self.engine)
        register(self.writer)
        self.durations: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _result(self, n: int) -> FrameResult:
        from alert_strips import strip_results  # noqa: PLC0415

        (result,) = strip_results(f"S-INGEST-{n}", [], frames=[0])
        crop = TileImage(result.meta.frame_id, 0, 0, 0, 256, 64, 64, "image/jpeg", b"\xff\xd8\xff")
        return replace(result, source=KafkaCoordinates("mill.frames", 0, n), evidence=(crop,))

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                self.writer.write_results([self._result(n)])
            except BaseException as exc:
                self.errors.append(exc)
            self.durations.append(time.monotonic() - started)
            time.sleep(0.05)

    def __enter__(self) -> _Ingestion:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self.engine.dispose()

    @property
    def longest_s(self) -> float:
        return max(self.durations)


def _old_month_with_a_crop(engine: sa.Engine) -> str:
    """A month partition of 2020-01 holding one crop (old enough for any prune of 30 days)."""
    ensure_months(engine, 0, now=datetime(2020, 1, 15, tzinfo=UTC))
    _crop(engine, "old", datetime(2020, 1, 20, tzinfo=UTC))
    return "tile_images_2020_01"


def _analyst_engine(database_url: str, name: str) -> sa.Engine:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from worker.storage.engine import create_engine  # noqa: PLC0415

    url = make_url(database_url).set(username=name).render_as_string(hide_password=False)
    return create_engine(url, connect_args={"application_name": "analyst-notebook"})


@pytest.fixture
def analyst_login(database_url: str, postgres_server_url: str) -> Iterator[str]:
    """An analyst login whose idle transactions end after 3 s (its other limits the defaults)."""
    from worker.storage.engine import create_engine  # noqa: PLC0415
    from worker.storage.roles import create_login  # noqa: PLC0415
    from worker.storage.session_limits import SessionLimits  # noqa: PLC0415

    name = f"steel_test_analyst_{uuid.uuid4().hex[:12]}"
    create_login(database_url, name, "analyst", None, SessionLimits(600_000, 3_000, 5))
    yield name
    server = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"), {"n": name}
        )
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    server.dispose()


def test_prune_beside_an_idle_analyst_holds_no_insert_up_and_drops_once_the_idle_timeout_ends_it(
    engine: sa.Engine, database_url: str, worker_database_url: str, analyst_login: str
) -> None:
    """On main the DROP queued behind the analyst's AccessShareLock and every insert of the worker
    queued behind the DROP, until its lock_timeout (10 s) failed it — and again on every retry, for
    as long as the analyst's transaction stayed open (which nothing ended)."""
    old = _old_month_with_a_crop(engine)
    analyst_engine = _analyst_engine(database_url, analyst_login)
    analyst = analyst_engine.connect()
    notes: list[str] = []
    outcome: list[Any] = []
    try:
        analyst.execute(sa.text("SELECT count(*) FROM tile_images"))  # AccessShareLock, then idle
        analyst_pid = analyst.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        policy = LockPolicy(
            lock_timeout_ms=500, attempts=40, max_wait_s=20, backoff_s=0.25, backoff_cap_s=0.5
        )
        with _Ingestion(worker_database_url) as ingestion:
            time.sleep(0.7)  # the analyst has been idle in its transaction longer than the lock timeout
            started = time.monotonic()
            prune_thread = threading.Thread(
                target=lambda: outcome.append(
                    prune(engine, timedelta(days=30), lock=policy, notify=notes.append)
                )
            )
            prune_thread.start()
            prune_thread.join(20)
            prune_s = time.monotonic() - started
            time.sleep(0.3)
        assert not prune_thread.is_alive()
        (report,) = outcome
        assert [p.name for p in report.dropped] == [old]
        assert 1.5 < prune_s < 8, prune_s  # the analyst's idle timeout (3 s) ended its transaction
        assert not ingestion.errors
        assert len(ingestion.durations) > 20
        assert ingestion.longest_s < 1.0, f"an insert waited {ingestion.longest_s:.2f} s"
        assert notes and f"pid {analyst_pid} (user {analyst_login}, application analyst-notebook;" in notes[0]
        assert "idle in transaction" in notes[0] and "not tried" in notes[0]
        with pytest.raises(sa.exc.OperationalError):  # the server closed the idle analyst's session
            analyst.execute(sa.text("SELECT 1"))
    finally:
        analyst.close()
        analyst_engine.dispose()
    with engine.connect() as conn:
        assert old not in [p.name for p in partitions.partitions(conn)]


def test_prune_behind_a_busy_reader_holds_inserts_up_one_lock_timeout_at_most_and_says_who_held_it(  # noqa: PLR0917
    engine: sa.Engine,
    database_url: str,
    worker_database_url: str,
    worker_login: str,
    analyst_login: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A reader in the middle of a long statement is not idle: each try queues for the lock, and
    the worker's inserts behind it, for at most --lock-timeout-ms; then the command gives up with
    exit status 2, naming the session, and drops nothing."""
    old = _old_month_with_a_crop(engine)
    analyst_engine = _analyst_engine(database_url, analyst_login)
    reader_pid: list[int] = []

    def long_report() -> None:
        with analyst_engine.connect() as conn:
            reader_pid.append(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            conn.execute(sa.text("SELECT count(*) FROM tile_images"))
            with contextlib.suppress(sa.exc.DBAPIError):  # cancelled at the end of the test
                conn.execute(sa.text("SELECT pg_sleep(30)"))

    reader = threading.Thread(target=long_report, daemon=True)
    reader.start()
    try:
        time.sleep(0.5)
        with _Ingestion(worker_database_url) as ingestion:
            started = time.monotonic()
            status = main(
                ["db", "--database-url", database_url, "prune", "--older-than", "30d",
                 "--lock-timeout-ms", "600", "--attempts", "3", "--max-wait", "30"]
            )  # fmt: skip
            prune_s = time.monotonic() - started
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_cancel_backend(:p)"), {"p": reader_pid[0]})
        reader.join(10)
        analyst_engine.dispose()
    err = capsys.readouterr().err
    assert status == 2
    assert 2.5 < prune_s < 10, prune_s  # 3 tries of 0.6 s, pauses of 1 s and 2 s
    assert f"expected to lock tile_images, {old} within 600 ms per attempt, but 3 attempts" in err
    assert f"pid {reader_pid[0]} (user {analyst_login}, application analyst-notebook; active for" in err
    assert "AccessShareLock on tile_images" in err
    assert f"pg_terminate_backend(pid) for pid {reader_pid[0]}, or" in err
    assert worker_login not in err  # the worker's inserts queued behind a try are not what held it
    assert err.count("no lock within 600 ms") == 2  # the two tries before the last, one line each
    assert not ingestion.errors
    assert 0.45 < ingestion.longest_s < 1.1, f"the longest insert took {ingestion.longest_s:.2f} s"
    with engine.connect() as conn:
        assert old in [p.name for p in partitions.partitions(conn)]


def test_lock_policy_pauses_double_up_to_the_cap_and_refuses_nonsense() -> None:
    policy = LockPolicy(backoff_s=1, backoff_cap_s=30)
    assert [policy.pause_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    with pytest.raises(ConfigError, match="lock timeout: expected 1 ms or more, received 0"):
        LockPolicy(lock_timeout_ms=0)
    with pytest.raises(ConfigError, match="attempts: expected 1 or more"):
        LockPolicy(attempts=0)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--lock-timeout-ms", "0"],
            {},
            "--lock-timeout-ms: expected a whole number of 1 or more, received '0'",
        ),
        (
            [],
            {"DB_PRUNE_ATTEMPTS": "many"},
            "expected a whole number of 1 or more, received 'many' (from --attempts",
        ),
        (["--max-wait", "nan"], {}, "expected a number of seconds above 0, received 'nan'"),
    ],
)
def test_prune_settings_that_are_not_numbers_say_what_was_expected(  # noqa: PLR0917 (fixtures)
    database_url: str,
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["db", "--database-url", database_url, "prune", "--older-than", "30d", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_command_and_the_lock_policy_agree_on_the_defaults() -> None:
    policy = LockPolicy()
    assert policy.lock_timeout_ms == command.DEFAULT_PRUNE_LOCK_TIMEOUT_MS
    assert policy.attempts == command.DEFAULT_PRUNE_ATTEMPTS
    assert policy.max_wait_s == command.DEFAULT_PRUNE_MAX_WAIT_S
