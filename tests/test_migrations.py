"""Migrations: upgrade from empty, downgrade to base, no drift, seeded catalogue, analyst role, start-up
schema check and the `db` command. Each test runs on a fresh database of its own."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError

from worker.catalogue import load_catalogue
from worker.errors import ConfigError, SchemaError
from worker.infra.postgres import fresh_database
from worker.storage import command, migrate, schema_check
from worker.storage.engine import create_engine
from worker.storage.tables import ANALYST_ROLE, metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted(metadata.tables)
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


def _role_exists(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ANALYST_ROLE}).scalar()
        )


def test_upgrade_from_empty_creates_tables_views_role_and_reaches_head(
    empty_database_url: str, empty_engine: sa.Engine
) -> None:
    assert migrate.current_revision(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    tables, views = _relations(empty_engine)
    assert tables == {*TABLES, "alembic_version"}
    assert views == set(VIEWS)
    assert _role_exists(empty_engine)
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
    assert tables == {*TABLES, "alembic_version"}
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


@pytest.mark.parametrize("relation", [*TABLES, *VIEWS])
def test_analyst_role_can_select_every_table_and_view(analyst_engine: sa.Engine, relation: str) -> None:
    _as_analyst(analyst_engine, f"SELECT * FROM {relation} LIMIT 1")


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
    assert capsys.readouterr().out == f"database schema at revision {head} (head)\n"
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
