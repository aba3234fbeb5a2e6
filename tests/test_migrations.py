"""Migrations: upgrade from empty, downgrade to base, no drift, seeded catalogue, analyst role, the
worker's least-privilege role (revision 0003), the alert columns (revision 0004), start-up schema
check and the `db` command. Each test runs on a fresh database of its own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError

from worker.core.catalogue import load_catalogue
from worker.core.errors import ConfigError, SchemaError
from worker.infra.postgres import fresh_database
from worker.storage import command, migrate, schema_check
from worker.storage.engine import create_engine
from worker.storage.roles import create_login
from worker.storage.tables import ANALYST_ROLE, WORKER_ROLE, metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted(metadata.tables)
#: The alert engine's lock rows: no privilege for the analysts, so they cannot take those locks.
LOCK_TABLE = "alert_strip_locks"
#: The console's users (revision 0006) and sessions (revision 0009): their password hashes and
#: session digests are not the analysts' business.
USERS_TABLE = "console_users"
SESSIONS_TABLE = "console_sessions"
ANALYST_TABLES = [t for t in TABLES if t not in {LOCK_TABLE, USERS_TABLE, SESSIONS_TABLE}]
#: The default partition of tile_images (revision 0005); month partitions come from `db partitions`.
PARTITIONS = ["tile_images_default"]
VIEWS = [
    "detections_with_cause",  # 0001
    "strip_summary",  # 0002: the analysts' views
    "strip_class_summary",
    "class_trend_hourly",
    "class_trend_shift",
    "top_causes",
    "alerts_with_cause",
]


@pytest.fixture
def empty_engine(empty_database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(empty_database_url)
    yield engine
    engine.dispose()


def _relations(engine: sa.Engine) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(engine)
    return set(inspector.get_table_names()), set(inspector.get_view_names())


def _role_exists(engine: sa.Engine, role: str = ANALYST_ROLE) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar())


def test_upgrade_from_empty_creates_tables_views_role_and_reaches_head(
    empty_database_url: str, empty_engine: sa.Engine
) -> None:
    assert migrate.current_revision(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    tables, views = _relations(empty_engine)
    assert tables == {*TABLES, *PARTITIONS, "alembic_version"}
    assert views == set(VIEWS)
    assert _role_exists(empty_engine)
    assert _role_exists(empty_engine, WORKER_ROLE)
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()


def test_upgrade_seeds_defect_classes_from_the_catalogue_file(database_url: str, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM defect_classes ORDER BY id")).mappings().all()
    expected = load_catalogue()
    assert [dict(r) for r in rows] == [
        {
            "id": c.id,
            "name": c.name,
            "features": c.features,
            "type": c.type,
            "cause": c.cause,
            "automatic_inspection": c.automatic_inspection,
            "prevention": c.prevention,
            "display_name": c.display_name,  # revision 0007: the name, for the paper's classes
        }
        for c in expected.classes
    ]
    assert [r["name"] for r in rows] == ["holes", "scratches", "rolling"]
    assert rows[2]["cause"] == "wear of the rollers"


def test_downgrade_to_base_removes_everything_and_upgrade_works_again(
    database_url: str, engine: sa.Engine
) -> None:
    migrate.downgrade(database_url, "base")
    assert _relations(engine) == ({"alembic_version"}, set())
    assert migrate.current_revision(database_url) is None
    migrate.upgrade(database_url)
    tables, views = _relations(engine)
    assert tables == {*TABLES, *PARTITIONS, "alembic_version"}
    assert views == set(VIEWS)


def test_alembic_check_finds_no_drift_between_tables_py_and_the_migrations(database_url: str) -> None:
    migrate.check(database_url)  # raises SchemaError on any difference


def test_alembic_check_reports_drift_when_the_database_differs(database_url: str, engine: sa.Engine) -> None:
    """The check can fail: a column missing from the database is reported."""
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE frames DROP COLUMN width_mm"))
    with pytest.raises(SchemaError, match="width_mm"):
        migrate.check(database_url)


def test_alembic_command_line_upgrades_checks_and_downgrades_with_alembic_ini(
    empty_database_url: str,
) -> None:
    """`alembic upgrade head`, `alembic check`, `alembic downgrade base` from the repository root."""
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    outputs = {}
    for args in (["upgrade", "head"], ["check"], ["downgrade", "base"]):
        completed = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, (args, completed.stderr)
        outputs[args[0]] = completed.stdout + completed.stderr
    assert "No new upgrade operations detected" in outputs["check"]
    assert migrate.current_revision(empty_database_url) is None


# ---------------------------------------------------------------------------------------------
# the read-only analyst role
# ---------------------------------------------------------------------------------------------

WRITES = {
    "defect_classes": [
        "INSERT INTO defect_classes (id, name) VALUES (99, 'x')",
        "UPDATE defect_classes SET cause = 'x'",
        "DELETE FROM defect_classes",
    ],
    "models": [
        "INSERT INTO models (version, backbone, input_size, class_names, thresholds)"
        " VALUES ('v', 'b', 1, '{}', '{}')",
        "UPDATE models SET backbone = 'x'",
        "DELETE FROM models",
    ],
    "frames": ["UPDATE frames SET strip_id = 'x'", "DELETE FROM frames", "TRUNCATE frames CASCADE"],
    "detections": ["UPDATE detections SET confidence = 1", "DELETE FROM detections"],
    "alerts": ["UPDATE alerts SET acknowledged_by = 'x'", "DELETE FROM alerts"],
}


@pytest.fixture(scope="module")
def analyst_engine(postgres_server_url: str) -> Iterator[sa.Engine]:
    """One migrated database shared by the role checks below: they only read, or fail to write."""
    with fresh_database(postgres_server_url) as url:
        migrate.upgrade(url)
        engine = create_engine(url)
        yield engine
        engine.dispose()


def _as_analyst(engine: sa.Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL ROLE {ANALYST_ROLE}"))
        conn.execute(sa.text(statement))


@pytest.mark.parametrize("relation", [*ANALYST_TABLES, *VIEWS])
def test_analyst_role_can_select_every_table_and_view_but_the_alert_locks(
    analyst_engine: sa.Engine, relation: str
) -> None:
    _as_analyst(analyst_engine, f"SELECT * FROM {relation} LIMIT 1")


def test_analyst_role_reads_the_columns_revision_0003_added(analyst_engine: sa.Engine) -> None:
    _as_analyst(analyst_engine, "SELECT message_sha256 FROM frames LIMIT 1")
    _as_analyst(analyst_engine, "SELECT publish_error FROM alerts LIMIT 1")


@pytest.mark.parametrize(
    "statement",
    [
        f"SELECT * FROM {LOCK_TABLE}",
        f"SELECT strip_id FROM {LOCK_TABLE} FOR UPDATE",
        f"SELECT strip_id FROM {LOCK_TABLE} FOR KEY SHARE",
        f"INSERT INTO {LOCK_TABLE} (strip_id) VALUES ('S1')",
        f"LOCK TABLE {LOCK_TABLE} IN ROW EXCLUSIVE MODE",
    ],
)
def test_analyst_role_can_neither_read_nor_lock_the_alert_strip_locks(
    analyst_engine: sa.Engine, statement: str
) -> None:
    """The alert engine serialises on these rows; a read-only analyst must not be able to stall it."""
    with pytest.raises(ProgrammingError, match=f"permission denied for table {LOCK_TABLE}"):
        _as_analyst(analyst_engine, statement)


@pytest.mark.parametrize("statement", [s for group in WRITES.values() for s in group])
def test_analyst_role_cannot_insert_update_or_delete(analyst_engine: sa.Engine, statement: str) -> None:
    with pytest.raises(ProgrammingError, match="permission denied"):
        _as_analyst(analyst_engine, statement)


def test_analyst_role_cannot_insert_into_the_ledger(analyst_engine: sa.Engine) -> None:
    with pytest.raises(ProgrammingError, match="permission denied for table frames"):
        _as_analyst(
            analyst_engine,
            "INSERT INTO frames VALUES"
            " ('f', 's', 'l', 'c', 'top', now(), 0, 1, 1, 'v', 't', 0, 0, 1, 0, now())",
        )


def test_downgrade_keeps_the_role_while_another_database_still_grants_it(
    postgres_server_url: str, database_url: str, engine: sa.Engine
) -> None:
    """Roles are cluster-wide: downgrading one database must not break another one's analysts."""
    with fresh_database(postgres_server_url) as other_url:
        migrate.upgrade(other_url)
        migrate.downgrade(other_url, "base")
        assert _role_exists(engine)
        _as_analyst(engine, "SELECT count(*) FROM detections_with_cause")
    migrate.downgrade(database_url, "base")
    with engine.connect() as conn:
        still_used_elsewhere = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_shdepend JOIN pg_roles ON pg_roles.oid = refobjid WHERE rolname = :r"
            ),
            {"r": ANALYST_ROLE},
        ).scalar()
    # dropped, unless some other database on this shared server (another test run) still uses it
    assert not _role_exists(engine) or still_used_elsewhere


# ---------------------------------------------------------------------------------------------
# the worker's role (revision 0003)
# ---------------------------------------------------------------------------------------------

#: Exactly what `steel_worker` may do in a migrated database: tables and sequences.
WORKER_PRIVILEGES = {
    "alembic_version": {"SELECT"},
    "defect_classes": {"SELECT", "INSERT", "UPDATE"},
    "models": {"SELECT", "INSERT", "UPDATE"},
    "frames": {"SELECT", "INSERT"},
    "detections": {"SELECT", "INSERT"},
    "alerts": {"SELECT", "INSERT", "UPDATE"},
    "tile_images": {"SELECT", "INSERT"},
    LOCK_TABLE: {"SELECT", "INSERT", "UPDATE"},
    "camera_health": {"SELECT", "INSERT", "UPDATE"},  # revision 0010: each camera's run of bad frames
    "detections_id_seq": {"USAGE", "SELECT"},
    "alerts_id_seq": {"USAGE", "SELECT"},
}


def _privileges(engine: sa.Engine, role: str) -> dict[str, set[str]]:
    """Every privilege granted to `role` in the database (relations, columns, functions, schemas,
    the database itself), keyed by object; role defaults under "settings"."""
    queries = {
        "relation": "SELECT c.relname, a.privilege_type FROM pg_class AS c, aclexplode(c.relacl) AS a"
        " WHERE a.grantee = to_regrole(:role)",
        "column": "SELECT c.relname || '.' || t.attname, a.privilege_type"
        " FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid, aclexplode(t.attacl) AS a"
        " WHERE a.grantee = to_regrole(:role)",
        "function": "SELECT p.proname, a.privilege_type FROM pg_proc AS p, aclexplode(p.proacl) AS a"
        " WHERE a.grantee = to_regrole(:role)",
        "schema": "SELECT 'schema ' || n.nspname, a.privilege_type"
        " FROM pg_namespace AS n, aclexplode(n.nspacl) AS a WHERE a.grantee = to_regrole(:role)",
        "database": "SELECT 'database', a.privilege_type FROM pg_database AS d, aclexplode(d.datacl) AS a"
        " WHERE d.datname = current_database() AND a.grantee = to_regrole(:role)",
        "settings": "SELECT 'settings', unnest(setconfig) FROM pg_db_role_setting"
        " WHERE setrole = to_regrole(:role)",
    }
    granted: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for query in queries.values():
            for name, privilege in conn.execute(sa.text(query), {"role": role}):
                granted.setdefault(name, set()).add(privilege)
    return granted


def test_worker_role_has_exactly_what_the_worker_needs(analyst_engine: sa.Engine) -> None:
    """USAGE on the schema; SELECT/INSERT (and UPDATE where it upserts or marks) on its tables; the
    two id sequences; no DELETE, TRUNCATE, DDL, views, functions, column grants or role defaults."""
    assert _privileges(analyst_engine, WORKER_ROLE) == {**WORKER_PRIVILEGES, "schema public": {"USAGE"}}
    with analyst_engine.connect() as conn:
        role = conn.execute(
            sa.text(
                "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = :r"
            ),
            {"r": WORKER_ROLE},
        ).one()
    assert tuple(role) == (False, False, False, False)


def test_analyst_role_has_select_on_its_tables_and_views_and_nothing_on_the_alert_locks(
    analyst_engine: sa.Engine,
) -> None:
    assert _privileges(analyst_engine, ANALYST_ROLE) == {
        **{relation: {"SELECT"} for relation in [*ANALYST_TABLES, *VIEWS]},
        "schema public": {"USAGE"},
    }
    with analyst_engine.connect() as conn:
        assert not conn.execute(
            sa.text(
                "SELECT has_table_privilege(:r, :t, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE,"
                " REFERENCES, TRIGGER')"
            ),
            {"r": ANALYST_ROLE, "t": LOCK_TABLE},
        ).scalar()


def test_downgrade_to_0002_removes_the_lock_table_the_columns_and_the_worker_grants(
    database_url: str, engine: sa.Engine
) -> None:
    migrate.downgrade(database_url, "0002")
    tables, views = _relations(engine)
    assert tables == {*ANALYST_TABLES, "alembic_version"} - {"tile_images", "reviews", "camera_health"}
    assert views == set(VIEWS)
    inspector = sa.inspect(engine)
    assert "message_sha256" not in {c["name"] for c in inspector.get_columns("frames")}
    assert "publish_error" not in {c["name"] for c in inspector.get_columns("alerts")}
    assert _privileges(engine, WORKER_ROLE) == {}
    migrate.upgrade(database_url)
    migrate.check(database_url)
    assert _privileges(engine, WORKER_ROLE) == {**WORKER_PRIVILEGES, "schema public": {"USAGE"}}


def _worker_role_in_use(engine: sa.Engine) -> bool:
    """Whether another database grants `steel_worker` anything or a login is a member of it."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT EXISTS (SELECT FROM pg_shdepend WHERE refobjid = to_regrole(:r))"
                    " OR EXISTS (SELECT FROM pg_auth_members WHERE roleid = to_regrole(:r))"
                ),
                {"r": WORKER_ROLE},
            ).scalar()
        )


def test_downgrade_keeps_the_worker_role_while_a_login_is_a_member_and_drops_it_when_unused(
    database_url: str, engine: sa.Engine
) -> None:
    """Dropping the role would silently take the membership from the workers' logins: kept then."""
    login = f"steel_test_member_{uuid.uuid4().hex[:12]}"
    create_login(database_url, login, "worker")
    try:
        migrate.downgrade(database_url, "0002")
        assert _role_exists(engine, WORKER_ROLE)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP ROLE "{login}"'))
    migrate.upgrade(database_url)
    migrate.downgrade(database_url, "0002")
    # dropped, unless another database on this shared server (another test run) still uses it
    assert not _role_exists(engine, WORKER_ROLE) or _worker_role_in_use(engine)


# ---------------------------------------------------------------------------------------------
# revision 0004: the alert fields every alert has, out of alerts.details into columns
# ---------------------------------------------------------------------------------------------

#: details as the worker wrote them before revision 0004: the common fields, then the rule's own.
DETAILS_AT_0003 = {
    "kind": "density",
    "surface": "top",
    "line": "L1",
    "camera": "cam-top-1",
    "model_version": "abc123",
    "frame_ids": ["F-1", "F-2"],
    "max_confidence": 0.875,
    "observed_at": "2026-11-30T08:30:00.123000+00:00",
    "window_m": 3.0,
    "min_count": 5,
}
RULE_MEASURED = {"window_m": 3.0, "min_count": 5}


def _insert_alert_at_0003(engine: sa.Engine, key: str, details: dict[str, object]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO alerts (dedup_key, rule, class_id, strip_id, severity, position_start_m,"
                " position_end_m, detection_count, evidence, details)"
                " VALUES (:k, 'holes-cluster', 1, 'S1', 'medium', 1, 2, 2, '{1,2}', CAST(:d AS jsonb))"
            ),
            {"k": key, "d": json.dumps(details)},
        )


def _alert(engine: sa.Engine, key: str) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text("SELECT * FROM alerts WHERE dedup_key = :k"), {"k": key}).mappings().one()
        )


def test_upgrade_to_0004_moves_the_common_alert_fields_into_columns_and_downgrade_folds_them_back(
    database_url: str, engine: sa.Engine
) -> None:
    migrate.downgrade(database_url, "0003")
    _insert_alert_at_0003(engine, "written-by-the-worker", DETAILS_AT_0003)
    _insert_alert_at_0003(engine, "written-by-hand", {"window_m": 3.0, "frame_ids": "not a list"})
    migrate.upgrade(database_url)

    row = _alert(engine, "written-by-the-worker")
    assert (row["rule_kind"], row["surface"], row["line"], row["camera"], row["model_version"]) == (
        "density",
        "top",
        "L1",
        "cam-top-1",
        "abc123",
    )
    assert row["frame_ids"] == ["F-1", "F-2"]
    assert row["max_confidence"] == pytest.approx(0.875)
    assert row["observed_at"] == datetime(2026, 11, 30, 8, 30, 0, 123000, tzinfo=UTC)
    assert row["details"] == RULE_MEASURED
    by_hand = _alert(engine, "written-by-hand")
    assert (by_hand["rule_kind"], by_hand["frame_ids"], by_hand["max_confidence"]) == ("", [], 0)
    assert by_hand["observed_at"] is None and by_hand["details"] == {"window_m": 3.0}
    with engine.connect() as conn:
        view = (
            conn.execute(sa.text("SELECT * FROM alerts_with_cause WHERE alert_id = :i"), {"i": row["id"]})
            .mappings()
            .one()
        )
    assert (view["rule_kind"], view["surface"], view["camera"], view["frame_ids"]) == (
        "density",
        "top",
        "cam-top-1",
        ["F-1", "F-2"],
    )

    migrate.downgrade(database_url, "0003")
    folded = dict(_alert(engine, "written-by-the-worker")["details"])  # type: ignore[call-overload]
    observed = datetime.fromisoformat(folded.pop("observed_at"))  # written in the session's time zone
    assert observed == datetime.fromisoformat(str(DETAILS_AT_0003["observed_at"]))
    expected = {k: v for k, v in DETAILS_AT_0003.items() if k != "observed_at"}
    assert folded == {**expected, "max_confidence": pytest.approx(0.875)}
    assert "rule_kind" not in _alert(engine, "written-by-the-worker")
    with engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT rule_kind, surface FROM alerts_with_cause WHERE alert_id = :i"), {"i": row["id"]}
        ).one() == ("density", "top")
    migrate.upgrade(database_url)
    migrate.check(database_url)


def test_analyst_role_reads_the_alert_columns_revision_0004_added(analyst_engine: sa.Engine) -> None:
    _as_analyst(
        analyst_engine,
        "SELECT rule_kind, surface, line, camera, frame_ids, max_confidence, model_version, observed_at"
        " FROM alerts_with_cause LIMIT 1",
    )


# ---------------------------------------------------------------------------------------------
# the worker's start-up check
# ---------------------------------------------------------------------------------------------


def test_schema_check_passes_at_head(engine: sa.Engine) -> None:
    assert schema_check.assert_schema_current(engine) == migrate.head_revision()


def test_schema_check_on_an_empty_database_says_to_run_db_upgrade(empty_engine: sa.Engine) -> None:
    with pytest.raises(SchemaError) as raised:
        schema_check.assert_schema_current(empty_engine)
    assert str(raised.value) == (
        f"database schema is at revision none (no migrations applied), this worker needs"
        f" {migrate.head_revision()}: run `steel-worker db upgrade`"
    )


def test_schema_check_behind_names_both_revisions_and_the_command(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose code needs a newer revision than the database has refuses to start."""
    current = migrate.head_revision()
    monkeypatch.setattr(schema_check, "head_revision", lambda: "0099")
    with pytest.raises(SchemaError) as raised:
        schema_check.assert_schema_current(engine)
    assert str(raised.value) == (
        f"database schema is at revision {current}, this worker needs 0099: run `steel-worker db upgrade`"
    )


def test_schema_check_ahead_says_the_worker_is_older_than_the_database(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(SchemaError, match="revision ffff, which this worker does not know"):
        schema_check.assert_schema_current(engine)


# ---------------------------------------------------------------------------------------------
# steel-worker db
# ---------------------------------------------------------------------------------------------


def _db(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="steel-worker")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["db", *argv])
    return int(args.func(args))


def test_db_command_upgrades_reports_checks_and_downgrades(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    head = migrate.head_revision()
    url = ["--database-url", empty_database_url]
    assert _db(*url, "current") == 0
    assert capsys.readouterr().out == f"database schema at revision none (head is {head})\n"
    assert _db(*url, "--wait", "5", "upgrade") == 0
    made, schema = capsys.readouterr().out.splitlines()
    assert made.startswith("tile_images: made partitions tile_images_")  # this month and 3 ahead
    assert schema == f"database schema at revision {head} (head)"
    assert _db(*url, "check") == 0
    assert _db(*url, "downgrade", "base") == 0
    assert migrate.current_revision(empty_database_url) is None


def test_db_command_without_a_database_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        _db("upgrade")


def test_db_command_check_fails_on_an_empty_database(empty_database_url: str) -> None:
    with pytest.raises(SchemaError, match="steel-worker db upgrade"):
        _db("--database-url", empty_database_url, "check")


#: revision 0007: the views that show a class, and the column each gained
DISPLAY_COLUMNS = {
    "detections_with_cause": "class_display_name",
    "strip_class_summary": "class_display_name",
    "class_trend_hourly": "class_display_name",
    "class_trend_shift": "class_display_name",
    "alerts_with_cause": "class_display_name",
    "top_causes": "class_display_names",
}


def test_revision_0007_adds_display_names_to_the_classes_and_their_views_and_downgrade_removes_them(
    database_url: str, engine: sa.Engine
) -> None:
    """Existing classes get their name as display name; each class view gains its display column as
    the last one (the others stay where analysts' queries expect them); the downgrade drops both,
    keeps the analysts' SELECT on the re-made views, and the upgrade after it matches tables.py."""
    migrate.downgrade(database_url, "0007")  # as 0007 left them (0008 appends pass_id to two views)
    inspector = sa.inspect(engine)
    for view, column in DISPLAY_COLUMNS.items():
        assert [c["name"] for c in inspector.get_columns(view)][-1] == column, view
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT count(*) FROM defect_classes WHERE display_name <> name")).scalar()
            == 0
        )
        assert conn.execute(sa.text("SELECT classes, class_display_names FROM top_causes LIMIT 1")).one()[1]
    migrate.downgrade(database_url, "0006")
    inspector = sa.inspect(engine)
    assert "display_name" not in {c["name"] for c in inspector.get_columns("defect_classes")}
    for view, column in DISPLAY_COLUMNS.items():
        assert column not in {c["name"] for c in inspector.get_columns(view)}, view
        assert _privileges(engine, ANALYST_ROLE).get(view) == {"SELECT"}, view
    migrate.upgrade(database_url)
    migrate.check(database_url)


def test_revision_0009_gives_the_console_its_sessions_and_the_schema_revision_and_downgrade_takes_them(
    database_url: str, engine: sa.Engine
) -> None:
    """steel_console may read the schema revision (`console serve` checks it at start-up) and keep
    its sessions (no UPDATE: a session is never extended); the analysts get nothing on the sessions.
    The downgrade (to whatever revision 0009 follows) revokes both and drops the table."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    from worker.storage.tables import CONSOLE_ROLE  # noqa: PLC0415

    granted = _privileges(engine, CONSOLE_ROLE)
    assert granted[SESSIONS_TABLE] == {"SELECT", "INSERT", "DELETE"}
    assert granted["alembic_version"] == {"SELECT"}
    assert SESSIONS_TABLE not in _privileges(engine, ANALYST_ROLE)
    before = ScriptDirectory.from_config(migrate.alembic_config()).get_revision("0009").down_revision
    migrate.downgrade(database_url, str(before))
    assert SESSIONS_TABLE not in _relations(engine)[0]
    assert "alembic_version" not in _privileges(engine, CONSOLE_ROLE)
    migrate.upgrade(database_url)
    migrate.check(database_url)
    assert _privileges(engine, CONSOLE_ROLE)[SESSIONS_TABLE] == {"SELECT", "INSERT", "DELETE"}


def test_revision_0008_adds_the_pass_to_frames_alerts_and_their_views_and_downgrade_removes_it(
    database_url: str, engine: sa.Engine
) -> None:
    """Rows stored before 0008 are the first pass (inferred); the views show the pass as their last
    column; the downgrade drops the columns and the indexes, keeps the analysts' SELECT on the
    re-made views (their display-name column last again), and the upgrade after it matches tables.py."""
    migrate.downgrade(database_url, "0007")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO models (version, backbone, input_size, class_names, thresholds)"
                " VALUES ('m', 'resnet50', 256, '{holes}', '{}')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO frames (frame_id, strip_id, line, camera, surface, captured_at, position_m,"
                " model_version, kafka_topic, kafka_partition, kafka_offset, tile_count, detection_count,"
                " processed_at)"
                " VALUES ('f1', 'S1', 'L1', 'c1', 'top', now(), 1.5, 'm', 't', 0, 0, 1, 0, now())"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO alerts (dedup_key, rule, class_id, strip_id, severity, position_start_m,"
                " position_end_m, detection_count, evidence, rule_kind, surface, line, camera, frame_ids,"
                " max_confidence, model_version) VALUES ('k', 'r', 1, 'S1', 'high', 1, 2, 1, '{}',"
                " 'density', 'top', 'L1', 'c1', '{f1}', 0.9, 'm')"
            )
        )
    migrate.upgrade(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pass_id, pass_inferred FROM frames")).one() == ("1", True)
        assert conn.execute(sa.text("SELECT pass_id FROM alerts_with_cause")).scalar() == "1"
    inspector = sa.inspect(engine)
    for view in ("detections_with_cause", "alerts_with_cause"):
        assert [c["name"] for c in inspector.get_columns(view)][-1] == "pass_id", view
    indexes = {i["name"] for i in inspector.get_indexes("frames")}
    assert {
        "ix_frames_strip_id_pass_id_surface_position_m",
        "ix_frames_strip_id_pass_id_captured_at",
    } <= indexes

    migrate.downgrade(database_url, "0007")
    inspector = sa.inspect(engine)
    assert "pass_id" not in {c["name"] for c in inspector.get_columns("frames")}
    assert "pass_id" not in {c["name"] for c in inspector.get_columns("alerts")}
    for view in ("detections_with_cause", "alerts_with_cause"):
        assert [c["name"] for c in inspector.get_columns(view)][-1] == "class_display_name", view
        assert _privileges(engine, ANALYST_ROLE).get(view) == {"SELECT"}, view
    migrate.upgrade(database_url)
    migrate.check(database_url)
