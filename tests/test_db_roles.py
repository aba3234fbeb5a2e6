"""Least privilege on the real server: the worker's login does all the worker does and nothing more,
the analysts cannot stall alert evaluation, evaluations of a strip are serialised by row locks, and
`steel-worker db create-login` makes logins idempotently without ever showing the password.

Logins are real LOGIN roles on the test server (roles are cluster-wide): unique names, dropped
after each test. The server trusts local connections, so a login connects by name alone; where a
password is set, the test checks the stored SCRAM (or md5) verifier against it instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alert_strips import Defect, register, scattered_defects, strip_results
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from worker.alerts.config import load_rules
from worker.alerts.engine import AlertEngine
from worker.alerts.outbox import publish_pending
from worker.alerts.stage import AlertStage
from worker.cli import main
from worker.core.catalogue import load_catalogue
from worker.core.errors import ConfigError
from worker.storage.engine import create_engine
from worker.storage.roles import create_login
from worker.storage.schema_check import assert_schema_current
from worker.storage.tables import ANALYST_ROLE, WORKER_ROLE
from worker.storage.writer import StorageWriter

CATALOGUE = load_catalogue()
RULES = load_rules()
#: The key the alert engine used to lock a strip with before revision 0003 (anyone could take it).
OLD_ADVISORY_KEY = "SELECT pg_advisory_lock(hashtextextended('steel-worker.alerts:' || :strip, 0))"
INSUFFICIENT_PRIVILEGE = "42501"
#: What `create-login --role analyst` reports of the analysts' default session limits.
ANALYST_LIMITS = "statement_timeout 600 s, idle_in_transaction_session_timeout 300 s, at most 5 connections"


def _holes(count: int, first_m: float = 2.0) -> list[Defect]:
    """`count` holes 0.5 m apart: six of them make a `holes-cluster` alert."""
    return [Defect(first_m + n * 0.5, "holes", 0.8, lane=n % 7) for n in range(count)]


def _as(database_url: str, login: str, password: str | None = None) -> str:
    return make_url(database_url).set(username=login, password=password).render_as_string(hide_password=False)


def _engine(url: str, lock_timeout_ms: int = 2000) -> sa.Engine:
    """An engine whose lock waits fail after `lock_timeout_ms`: a regression fails, never hangs."""
    return create_engine(url, connect_args={"options": f"-c lock_timeout={lock_timeout_ms}"})


def _drop_role(server_url: str, name: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


@pytest.fixture
def logins(postgres_server_url: str) -> Iterator[list[str]]:
    """Names of login roles a test creates: each is dropped after the test."""
    names: list[str] = []
    yield names
    for name in names:
        _drop_role(postgres_server_url, name)


@pytest.fixture
def make_login(database_url: str, logins: list[str]) -> Callable[..., str]:
    """make_login(kind, password=None) -> a new login role's name (a member of its group role)."""

    def make(kind: str, password: str | None = None) -> str:
        name = f"steel_test_{kind}_{uuid.uuid4().hex[:12]}"
        logins.append(name)
        create_login(database_url, name, kind, password)  # type: ignore[arg-type]
        return name

    return make


@pytest.fixture
def worker_engine(worker_database_url: str) -> Iterator[sa.Engine]:
    engine = _engine(worker_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def writer(worker_engine: sa.Engine) -> StorageWriter:
    writer = StorageWriter(worker_engine)
    register(writer)  # ensure_catalogue and register_model, as the worker's login
    return writer


@pytest.fixture
def analyst_engine(database_url: str, make_login: Callable[..., str]) -> Iterator[sa.Engine]:
    engine = _engine(_as(database_url, make_login("analyst")))
    yield engine
    engine.dispose()


def _alerts(engine: sa.Engine) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM alerts ORDER BY id")).mappings())


# ---------------------------------------------------------------------------------------------
# the worker's login: everything the worker does, nothing else
# ---------------------------------------------------------------------------------------------


class _Delivered:
    """A kafka-python send future that has succeeded."""

    is_done = True
    exception = None

    def succeeded(self) -> bool:
        return True


class _AcceptingProducer:
    """A producer whose every send is acknowledged at once (the broker is not what is tested here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        self.sent.append((topic, key, value))
        return _Delivered()

    def flush(self, timeout: float | None = None) -> None:
        return None


def test_the_worker_login_checks_the_schema_writes_results_raises_and_publishes_alerts(
    writer: StorageWriter, worker_engine: sa.Engine, engine: sa.Engine, worker_login: str
) -> None:
    """Start-up check, catalogue and model (in the fixture), ledger and detections, a redelivery,
    alert evaluation (twice: the lock row is new, then locked again) and the outbox, as the login."""
    with worker_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == worker_login
    assert_schema_current(worker_engine)
    results = strip_results("S-WORKER", _holes(6))
    outcome = writer.write_results(results)
    assert len(outcome.new_frame_ids) == len(results)
    assert writer.write_results(results).existing_frame_ids == outcome.new_frame_ids  # a redelivery
    stage = AlertStage(worker_engine, RULES, CATALOGUE, "mill.alerts")
    (alert,) = stage.evaluate(results)
    assert (alert.rule, alert.strip_id) == ("holes-cluster", "S-WORKER")
    assert stage.evaluate(results) == []
    producer = _AcceptingProducer()
    assert publish_pending(worker_engine, producer, "mill.alerts") == 1
    assert [(topic, key) for topic, key, _ in producer.sent] == [("mill.alerts", alert.dedup_key.encode())]
    (row,) = _alerts(engine)
    assert row["published_at"] is not None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT strip_id FROM alert_strip_locks")).scalars().all() == ["S-WORKER"]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM frames",
        "TRUNCATE detections",
        "DROP TABLE alerts",
        "CREATE TABLE scratch (id integer)",
        "UPDATE frames SET strip_id = 'x'",
        "UPDATE detections SET confidence = 1",
        "DELETE FROM alerts",
        "DELETE FROM alert_strip_locks",
        "TRUNCATE alert_strip_locks",
        "DELETE FROM defect_classes",
        "ALTER TABLE frames ADD COLUMN extra integer",
        "CREATE INDEX ON frames (line)",
        "UPDATE alembic_version SET version_num = '0001'",
        "SELECT * FROM strip_summary",
    ],
)
def test_the_worker_login_is_refused_deletes_truncates_ddl_and_the_analysts_views(
    worker_engine: sa.Engine, statement: str
) -> None:
    with (
        pytest.raises(ProgrammingError, match=r"permission denied|must be owner") as refused,
        worker_engine.begin() as conn,
    ):
        conn.execute(sa.text(statement))
    assert getattr(refused.value.orig, "pgcode", None) == INSUFFICIENT_PRIVILEGE


def test_the_worker_login_may_not_create_logins(worker_database_url: str) -> None:
    with pytest.raises(ConfigError, match=r"may not create roles.*superuser or a role with CREATEROLE"):
        create_login(worker_database_url, f"steel_test_never_{uuid.uuid4().hex[:12]}", "worker")


# ---------------------------------------------------------------------------------------------
# the analysts cannot stall alert evaluation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT strip_id FROM alert_strip_locks FOR UPDATE",
        "SELECT strip_id FROM alert_strip_locks FOR SHARE",
        "INSERT INTO alert_strip_locks (strip_id) VALUES ('S1')",
        "LOCK TABLE alert_strip_locks IN SHARE MODE",
    ],
)
def test_an_analyst_login_can_neither_lock_nor_insert_strip_lock_rows(
    analyst_engine: sa.Engine, statement: str
) -> None:
    with (
        pytest.raises(ProgrammingError, match="permission denied for table alert_strip_locks"),
        analyst_engine.begin() as conn,
    ):
        conn.execute(sa.text(statement))


def test_an_analyst_login_reads_the_tables_views_and_new_columns(analyst_engine: sa.Engine) -> None:
    with analyst_engine.connect() as conn:
        conn.execute(sa.text("SELECT message_sha256 FROM frames"))
        conn.execute(sa.text("SELECT publish_error, published_at FROM alerts"))
        conn.execute(sa.text("SELECT * FROM strip_summary"))


def test_an_analyst_holding_the_old_advisory_lock_does_not_stall_the_worker(
    writer: StorageWriter, worker_engine: sa.Engine, analyst_engine: sa.Engine
) -> None:
    """Before revision 0003 this evaluation waited for the analyst's session; now it does not."""
    results = strip_results("S1", _holes(6))
    writer.write_results(results)
    with analyst_engine.connect() as analyst:
        analyst.execute(sa.text(OLD_ADVISORY_KEY), {"strip": "S1"})
        started = time.monotonic()
        (alert,) = AlertEngine(worker_engine, RULES, CATALOGUE).evaluate_strips(["S1"])  # lock_timeout 2 s
        elapsed = time.monotonic() - started
        analyst.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    assert alert.strip_id == "S1"
    assert elapsed < 2.0


# ---------------------------------------------------------------------------------------------
# evaluations of one strip are serialised
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["a new strip with an alert to raise", "a strip evaluated before with nothing to raise"],
)
def test_a_second_evaluation_of_a_strip_waits_until_the_first_commits(
    case: str, writer: StorageWriter, worker_engine: sa.Engine, worker_database_url: str, engine: sa.Engine
) -> None:
    """The second transaction waits on the first one's lock row (a new row it inserted, or an old
    row it locked FOR UPDATE), and then finds the alert raised: no duplicate, no second alert.
    With nothing to raise nothing else would make it wait: only the lock row serialises them."""
    if case.startswith("a new strip"):
        results = strip_results("S-SERIAL", _holes(6))
        writer.write_results(results)
    else:
        results = strip_results("S-SERIAL", scattered_defects(4, 30.0, seed=3, class_name="holes"))
        writer.write_results(results)
        assert AlertEngine(worker_engine, RULES, CATALOGUE).evaluate_strips(["S-SERIAL"]) == []
    first_engine = _engine(worker_database_url, lock_timeout_ms=10_000)
    second_engine = _engine(worker_database_url, lock_timeout_ms=10_000)
    second: list[Any] = []
    errors: list[BaseException] = []

    def evaluate_again() -> None:
        try:
            second.extend(AlertEngine(second_engine, RULES, CATALOGUE).evaluate_strips(["S-SERIAL"]))
        except BaseException as exc:
            errors.append(exc)

    try:
        with first_engine.connect() as conn:
            transaction = conn.begin()
            first = AlertEngine(first_engine, RULES, CATALOGUE).evaluate(conn, ["S-SERIAL"])
            first_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            thread = threading.Thread(target=evaluate_again)
            thread.start()
            time.sleep(0.5)
            assert thread.is_alive(), f"the second evaluation did not wait: {second or errors}"
            with engine.connect() as observer:
                blockers = observer.execute(
                    sa.text(
                        "SELECT pg_blocking_pids(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalars()
                assert [list(b) for b in blockers] == [[first_pid]]
            transaction.commit()
        thread.join(10)
        assert not thread.is_alive(), "the second evaluation is still waiting after the first committed"
    finally:
        first_engine.dispose()
        second_engine.dispose()
    assert not errors
    assert second == []
    expected = ["holes-cluster"] if case.startswith("a new strip") else []
    assert [a.rule for a in first] == expected
    assert [r["rule"] for r in _alerts(engine)] == expected


def test_evaluations_of_strips_in_opposite_orders_do_not_deadlock(
    writer: StorageWriter, worker_database_url: str, engine: sa.Engine
) -> None:
    """Both take their strips' rows in sorted order, whatever order they were given in."""
    strips = [f"S-ORDER-{n}" for n in range(6)]
    for strip in strips:
        writer.write_results(strip_results(strip, _holes(6)))
    engines = [_engine(worker_database_url, lock_timeout_ms=10_000) for _ in range(4)]
    raised: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def evaluate(alert_engine: AlertEngine, order: list[str]) -> None:
        try:
            barrier.wait()
            raised.extend(alert_engine.evaluate_strips(order))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(
            target=evaluate,
            args=(AlertEngine(e, RULES, CATALOGUE), strips if n % 2 else list(reversed(strips))),
        )
        for n, e in enumerate(engines)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for e in engines:
            e.dispose()
    assert not [e for e in errors if isinstance(e, OperationalError)], errors
    assert not errors
    assert sorted(a.strip_id for a in raised) == strips
    assert len(_alerts(engine)) == len(strips)


# ---------------------------------------------------------------------------------------------
# steel-worker db create-login
# ---------------------------------------------------------------------------------------------


def _stored_password(engine: sa.Engine, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :n"), {"n": name}
        ).scalar_one()


def _verifies(stored: str, password: str, name: str) -> bool:
    """Whether `stored` (pg_authid.rolpassword) is the verifier of `password` (ASCII) for `name`."""
    if stored.startswith("SCRAM-SHA-256$"):
        iterations_salt, keys = stored.removeprefix("SCRAM-SHA-256$").split("$")
        iterations, salt = iterations_salt.split(":")
        stored_key, server_key = keys.split(":")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        return (
            base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key
            and base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode() == server_key
        )
    if stored.startswith("md5"):
        return stored == "md5" + hashlib.md5((password + name).encode()).hexdigest()
    raise AssertionError(f"expected a SCRAM-SHA-256 or md5 verifier, received {stored[:14]!r}…")


def _memberships(engine: sa.Engine, name: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT g.rolname FROM pg_auth_members AS m JOIN pg_roles AS g ON g.oid = m.roleid"
                    " WHERE m.member = to_regrole(:n) ORDER BY 1"
                ),
                {"n": name},
            ).scalars()
        )


def _create_login_cli(database_url: str, *argv: str) -> int:
    return main(["db", "--database-url", database_url, "create-login", *argv])


def test_create_login_makes_a_member_login_with_the_password_and_never_prints_it(
    database_url: str,
    engine: sa.Engine,
    logins: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"steel_test_cli_{uuid.uuid4().hex[:12]}"
    logins.append(name)
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEST_LOGIN_PASSWORD", password)
    assert (
        _create_login_cli(database_url, name, "--role", "worker", "--password-env", "TEST_LOGIN_PASSWORD")
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == f"login role {name} created: LOGIN, password set; now a member of {WORKER_ROLE}\n"
    assert password not in captured.out + captured.err
    stored = _stored_password(engine, name)
    assert stored is not None and password not in stored
    assert _verifies(stored, password, name)
    assert _memberships(engine, name) == [WORKER_ROLE]
    with engine.connect() as conn:
        assert tuple(
            conn.execute(
                sa.text("SELECT rolcanlogin, rolinherit, rolsuper FROM pg_roles WHERE rolname = :n"),
                {"n": name},
            ).one()
        ) == (True, True, False)


def test_create_login_again_changes_nothing_but_the_password_and_without_one_removes_it(
    database_url: str,
    engine: sa.Engine,
    logins: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"steel_test_cli_{uuid.uuid4().hex[:12]}"
    logins.append(name)
    args = [name, "--role", "analyst", "--password-env", "TEST_LOGIN_PASSWORD"]
    monkeypatch.setenv("TEST_LOGIN_PASSWORD", "first-password")
    assert _create_login_cli(database_url, *args) == 0
    monkeypatch.setenv("TEST_LOGIN_PASSWORD", "second-password")
    assert _create_login_cli(database_url, *args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        f"login role {name} updated: LOGIN, password set; already a member of {ANALYST_ROLE};"
        f" {ANALYST_LIMITS}"
    )
    stored = _stored_password(engine, name)
    assert stored is not None
    assert _verifies(stored, "second-password", name)
    assert not _verifies(stored, "first-password", name)
    assert _memberships(engine, name) == [ANALYST_ROLE]
    assert _create_login_cli(database_url, name, "--role", "analyst") == 0
    assert capsys.readouterr().out == (
        f"login role {name} updated: LOGIN, no password (trust, peer or certificate authentication);"
        f" already a member of {ANALYST_ROLE}; {ANALYST_LIMITS}\n"
    )
    assert _stored_password(engine, name) is None
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar()
            == 1
        )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad-name", "NAME must be letters, digits and _"),
        ("robert'); DROP ROLE postgres; --", "NAME must be letters, digits and _"),
        ('quoted"name', "NAME must be letters, digits and _"),
        ("1st_login", "NAME must be letters, digits and _"),
        ("x" * 64, "at most 63 characters"),
        ("", "NAME must be letters, digits and _"),
        ("pg_reader", "may not start with pg_"),
        (WORKER_ROLE, "not the group role"),
        (ANALYST_ROLE, "not the group role"),
    ],
)
def test_create_login_refuses_a_name_that_is_not_a_plain_identifier_or_is_reserved(
    database_url: str, engine: sa.Engine, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    with engine.connect() as conn:
        roles_before = conn.execute(sa.text("SELECT count(*) FROM pg_roles")).scalar()
    assert _create_login_cli(database_url, name, "--role", "worker") == 2
    err = capsys.readouterr().err
    assert message in err
    assert f"received {name!r}" in err
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_roles")).scalar() == roles_before


def test_create_login_refuses_a_missing_or_empty_password_variable(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"steel_test_cli_{uuid.uuid4().hex[:12]}"
    monkeypatch.delenv("TEST_LOGIN_PASSWORD", raising=False)
    args = [name, "--role", "worker", "--password-env", "TEST_LOGIN_PASSWORD"]
    assert _create_login_cli(database_url, *args) == 2
    assert "TEST_LOGIN_PASSWORD to hold the password, but it is not set" in capsys.readouterr().err
    monkeypatch.setenv("TEST_LOGIN_PASSWORD", "")
    assert _create_login_cli(database_url, *args) == 2
    assert "TEST_LOGIN_PASSWORD to hold the password, but it is empty" in capsys.readouterr().err


def test_create_login_refuses_a_superuser_the_database_owner_and_the_role_it_connects_as(
    database_url: str, engine: sa.Engine, logins: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    superuser = f"steel_test_super_{uuid.uuid4().hex[:12]}"
    owner = f"steel_test_owner_{uuid.uuid4().hex[:12]}"
    database = make_url(database_url).database
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{superuser}" SUPERUSER NOLOGIN'))
        conn.execute(sa.text(f'CREATE ROLE "{owner}" NOLOGIN'))
        logins.extend([superuser, owner])
        conn.execute(sa.text(f'ALTER DATABASE "{database}" OWNER TO "{owner}"'))
        me = conn.execute(sa.text("SELECT current_user")).scalar()
    try:
        assert _create_login_cli(database_url, superuser, "--role", "worker") == 2
        assert "exists and is a superuser; a least-privilege login must not be one" in capsys.readouterr().err
        assert _memberships(engine, superuser) == []
        assert _create_login_cli(database_url, owner, "--role", "worker") == 2
        assert "exists and owns this database" in capsys.readouterr().err
    finally:
        with engine.begin() as conn:  # give the database back, so that the role can be dropped
            conn.execute(sa.text(f'ALTER DATABASE "{database}" OWNER TO "{me}"'))
    assert _create_login_cli(database_url, str(me), "--role", "worker") == 2
    assert "is the role this command connects as" in capsys.readouterr().err


def test_a_login_made_by_create_login_works_in_every_migrated_database(
    make_login: Callable[..., str], postgres_server_url: str
) -> None:
    """Membership is cluster-wide, privileges come with each database's migration."""
    from worker.infra.postgres import fresh_database  # noqa: PLC0415
    from worker.storage import migrate  # noqa: PLC0415

    name = make_login("worker")
    with fresh_database(postgres_server_url) as other:
        migrate.upgrade(other)
        engine = create_engine(_as(other, name))
        try:
            writer = StorageWriter(engine)
            register(writer)
            assert writer.write_results(strip_results("S-OTHER", _holes(2))).new_frame_ids
        finally:
            engine.dispose()


# ---------------------------------------------------------------------------------------------
# session limits of the logins (issue 20, item 8)
# ---------------------------------------------------------------------------------------------


def _limits(engine: sa.Engine, name: str) -> tuple[list[str], int]:
    """(the role's settings for all databases, sorted; its connection limit)."""
    with engine.connect() as conn:
        settings = conn.execute(
            sa.text(
                "SELECT s.setconfig FROM pg_db_role_setting AS s"
                " WHERE s.setrole = to_regrole(:n) AND s.setdatabase = 0"
            ),
            {"n": name},
        ).scalar()
        limit = conn.execute(
            sa.text("SELECT rolconnlimit FROM pg_roles WHERE rolname = :n"), {"n": name}
        ).scalar()
    return sorted(settings or []), int(limit)


def test_logins_carry_the_session_limits_of_their_role_and_the_flags_change_them(
    database_url: str, engine: sa.Engine, logins: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's idle transaction ends after 5 minutes by default, so that it cannot hold a
    maintenance DROP, and the worker's inserts queued behind it, for longer (`db prune`)."""
    analyst, console, worker = (
        f"steel_test_{k}_{uuid.uuid4().hex[:12]}" for k in ("analyst", "console", "worker")
    )
    logins.extend([analyst, console, worker])
    assert _create_login_cli(database_url, analyst, "--role", "analyst") == 0
    assert capsys.readouterr().out.endswith(f"; {ANALYST_LIMITS}\n")
    assert _limits(engine, analyst) == (
        ["idle_in_transaction_session_timeout=300000", "statement_timeout=600000"],
        5,
    )
    assert _create_login_cli(database_url, console, "--role", "console") == 0
    assert _limits(engine, console) == (
        ["idle_in_transaction_session_timeout=60000", "statement_timeout=60000"],
        20,
    )
    assert _create_login_cli(database_url, worker, "--role", "worker") == 0  # the worker sets its own
    assert _limits(engine, worker) == ([], -1)
    capsys.readouterr()
    assert (
        _create_login_cli(
            database_url, analyst, "--role", "analyst",
            "--statement-timeout-ms", "none", "--idle-in-transaction-timeout-ms", "90000",
            "--connection-limit", "2",
        )
        == 0
    )  # fmt: skip
    assert capsys.readouterr().out.endswith(
        "; idle_in_transaction_session_timeout 90 s, at most 2 connections\n"
    )
    assert _limits(engine, analyst) == (["idle_in_transaction_session_timeout=90000"], 2)


def test_an_analyst_login_is_held_to_its_idle_timeout_and_its_connection_limit(
    database_url: str, logins: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"steel_test_analyst_{uuid.uuid4().hex[:12]}"
    logins.append(name)
    monkeypatch.setenv("LOGIN_IDLE_IN_TRANSACTION_TIMEOUT_MS", "500")
    monkeypatch.setenv("LOGIN_CONNECTION_LIMIT", "1")
    assert _create_login_cli(database_url, name, "--role", "analyst") == 0
    analyst = create_engine(_as(database_url, name), poolclass=sa.pool.NullPool)
    try:
        with analyst.connect() as conn:
            conn.execute(sa.text("SELECT count(*) FROM tile_images"))  # a transaction, left idle
            with pytest.raises(OperationalError, match="too many connections for role"), analyst.connect():
                pass
            time.sleep(1.0)
            with pytest.raises(OperationalError, match=r"idle-in-transaction timeout|closed"):
                conn.execute(sa.text("SELECT 1"))
    finally:
        analyst.dispose()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--connection-limit", "0"], {}, "expected a number of connections from 1 (or none for no limit)"),
        (["--statement-timeout-ms", "10s"], {}, "expected milliseconds (a whole number, 0 or none"),
        ([], {"LOGIN_STATEMENT_TIMEOUT_MS": "-5"}, "received '-5' (from --statement-timeout-ms or $LOGIN_"),
    ],
)
def test_create_login_limits_that_are_not_limits_say_what_was_expected(  # noqa: PLR0917 (fixtures)
    database_url: str,
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        _create_login_cli(database_url, "steel_test_never_made", "--role", "analyst", *argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
