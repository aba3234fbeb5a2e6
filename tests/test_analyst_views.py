"""The analysts' views (migration 0002): their numbers on known strips, shifts and time zones, the
read-only role (reads every view, writes nothing), and every SQL example of docs/analysts.md."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alert_strips import (
    FRAME_M,
    T0,
    Defect,
    periodic_defects,
    register,
    scattered_defects,
    strip_results,
)
from sqlalchemy.exc import ProgrammingError

from worker.alerts.config import load_rules
from worker.alerts.engine import AlertEngine
from worker.alerts.store import acknowledge
from worker.core.catalogue import load_catalogue
from worker.infra.postgres import fresh_database
from worker.storage import migrate
from worker.storage.engine import create_engine
from worker.storage.tables import ANALYST_ROLE
from worker.storage.writer import StorageWriter

DOCS = Path(__file__).resolve().parents[1] / "docs" / "analysts.md"
NEW_VIEWS = (
    "strip_summary",
    "strip_class_summary",
    "class_trend_hourly",
    "class_trend_shift",
    "top_causes",
    "alerts_with_cause",
)

# S-SIMPLE: 40 m, three holes in frame 7 (lanes 0-2), rolling in frames 39 and 78; at 05:00 UTC.
SIMPLE = [Defect(7 * FRAME_M + 0.1, "holes", 0.8, lane) for lane in range(3)] + [
    Defect(10.0, "rolling", 0.7),
    Defect(20.0, "rolling", 0.9),
]


@pytest.fixture(scope="module")
def db(postgres_server_url: str) -> Iterator[sa.Engine]:
    """One database for the module (the tests only read): four strips, alerts, one acknowledged.

    S-SIMPLE and S-0042 at 05:00 UTC (shift C 22–06), S-0043 at 14:30 (shift B), S-0044 the next
    day at 09:00 (shift A); S-0042 carries a roll mark, a holes cluster and scatter, both surfaces.
    """
    with fresh_database(postgres_server_url) as url:
        migrate.upgrade(url)
        engine = create_engine(url)
        writer = StorageWriter(engine)
        register(writer)
        roll = load_rules().rolls[0]
        s42 = (
            periodic_defects(roll.pitch_m, 16, seed=1, missing=(5,), first_m=6.0, lane=4)
            + [Defect(30 + n * 0.4, "holes", 0.8, lane=n % 7) for n in range(7)]
            + scattered_defects(20, 55, seed=3, class_name="scratches")
        )
        results = (
            strip_results("S-SIMPLE", SIMPLE, length_m=40.0)
            + strip_results("S-0042", s42, length_m=60.0)
            + strip_results(
                "S-0042",
                scattered_defects(6, 50, seed=5, class_name="holes"),
                length_m=60.0,
                surface="bottom",
            )
            + strip_results(
                "S-0043",
                scattered_defects(8, 30, seed=6, class_name="scratches"),
                length_m=40.0,
                start=T0 + timedelta(hours=9, minutes=30),
            )
            + strip_results("S-0044", [Defect(3.0, "holes")], length_m=10.0, start=T0 + timedelta(hours=28))
        )
        writer.write_results(results)
        alerts = AlertEngine(engine, load_rules(), load_catalogue()).evaluate_results(results)
        assert {a.rule for a in alerts} >= {"roll-marks", "holes-cluster"}
        acknowledge(engine, alerts[0].id, "mira")
        yield engine
        engine.dispose()


def _query(engine: sa.Engine, sql: str, role: str | None = None, **params: Any) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        if role:
            conn.execute(sa.text(f"SET LOCAL ROLE {role}"))
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


# ---------------------------------------------------------------------------------------------
# what the views say
# ---------------------------------------------------------------------------------------------


def test_strip_summary_counts_frames_extent_defects_per_100m_and_first_last_positions(db: sa.Engine) -> None:
    (row,) = _query(db, "SELECT * FROM strip_summary WHERE strip_id = 'S-SIMPLE'")
    frames = int(40.0 / FRAME_M) + 1
    assert row["frames"] == frames
    assert row["inspected_m"] == pytest.approx(frames * FRAME_M)
    assert row["detections"] == 5
    assert float(row["defects_per_100m"]) == pytest.approx(round(500 / (frames * FRAME_M), 2))
    assert row["classes_found"] == 2
    assert row["first_defect_m"] == pytest.approx(7 * FRAME_M + FRAME_M / 2)
    assert row["last_defect_m"] == pytest.approx(78 * FRAME_M + FRAME_M / 2)
    assert (row["alerts"], row["unacknowledged_alerts"]) == (0, 0)
    assert row["first_captured_at"] == T0


def test_strip_summary_counts_alerts_and_unacknowledged_ones(db: sa.Engine) -> None:
    (row,) = _query(db, "SELECT alerts, unacknowledged_alerts FROM strip_summary WHERE strip_id = 'S-0042'")
    total = _query(db, "SELECT count(*) AS n FROM alerts WHERE strip_id = 'S-0042'")[0]["n"]
    assert row["alerts"] == total >= 2
    assert row["unacknowledged_alerts"] == total - 1


def test_strip_class_summary_gives_each_class_with_cause_and_positions(db: sa.Engine) -> None:
    rows = _query(db, "SELECT * FROM strip_class_summary WHERE strip_id = 'S-SIMPLE' ORDER BY class_id")
    assert [(r["class_name"], r["detections"]) for r in rows] == [("holes", 3), ("rolling", 2)]
    holes, rolling = rows
    extent = (int(40.0 / FRAME_M) + 1) * FRAME_M
    assert float(rolling["per_100m"]) == pytest.approx(round(200 / extent, 2))
    assert (rolling["first_position_m"], rolling["last_position_m"]) == pytest.approx(
        (39 * FRAME_M + FRAME_M / 2, 78 * FRAME_M + FRAME_M / 2)
    )
    assert float(rolling["mean_confidence"]) == pytest.approx(0.8, abs=1e-4)
    assert rolling["max_confidence"] == pytest.approx(0.9)
    assert rolling["cause"] == "wear of the rollers"
    assert holes["prevention"] == "limit the scatter of melting-metallurgy and casting parameters"


def test_hourly_trend_has_every_class_for_every_hour_with_frames(db: sa.Engine) -> None:
    rows = _query(db, "SELECT * FROM class_trend_hourly ORDER BY hour, class_id")
    hours = sorted({r["hour"] for r in rows})
    assert hours == [T0, T0 + timedelta(hours=9), T0 + timedelta(hours=28)]
    assert len(rows) == 3 * 3
    total = _query(db, "SELECT count(*) AS n FROM detections")[0]["n"]
    assert sum(r["detections"] for r in rows) == total
    late = {r["class_name"]: r for r in rows if r["hour"] == T0 + timedelta(hours=9)}
    assert (late["holes"]["detections"], late["rolling"]["detections"]) == (0, 0)
    assert late["scratches"]["strips"] == 1
    frames = _query(db, "SELECT count(*) AS n FROM frames WHERE strip_id = 'S-0043'")[0]["n"]
    assert late["scratches"]["frames_inspected"] == frames
    assert float(late["scratches"]["per_1000_frames"]) == pytest.approx(
        round(1000 * late["scratches"]["detections"] / frames, 3)
    )


def test_shift_trend_uses_06_14_22_by_default(db: sa.Engine) -> None:
    rows = _query(db, "SELECT DISTINCT shift_start, shift FROM class_trend_shift ORDER BY shift_start")
    assert [(r["shift_start"], r["shift"]) for r in rows] == [
        (T0 - timedelta(hours=7), "C 22–06"),  # 05:00 belongs to the night shift that began at 22:00
        (T0 + timedelta(hours=9), "B 14–22"),
        (T0 + timedelta(hours=25), "A 06–14"),
    ]


def test_shift_hours_follow_the_setting_and_the_session_time_zone(db: sa.Engine) -> None:
    with db.begin() as conn:
        conn.execute(sa.text("SET LOCAL TIME ZONE 'Europe/Vienna'"))  # UTC+1 in March
        conn.execute(sa.text("SET LOCAL steel.first_shift_hour = '7'"))
        rows = conn.execute(
            sa.text("SELECT DISTINCT shift_start, shift FROM class_trend_shift ORDER BY shift_start")
        ).all()
    # 06:00 Vienna is in C (23–07), 15:30 in B (15–23), 10:00 next day in A (07–15)
    assert [(r.shift_start, r.shift) for r in rows] == [
        (T0 - timedelta(hours=7), "C 23–07"),
        (T0 + timedelta(hours=9), "B 15–23"),
        (T0 + timedelta(hours=25), "A 07–15"),
    ]


def test_top_causes_rank_causes_with_shares_summing_to_100(db: sa.Engine) -> None:
    rows = _query(db, "SELECT * FROM top_causes")
    assert [r["detections"] for r in rows] == sorted((r["detections"] for r in rows), reverse=True)
    assert sum(float(r["share_percent"]) for r in rows) == pytest.approx(100, abs=0.2)
    by_class = {r["classes"][0]: r for r in rows}
    assert set(by_class) == {"holes", "scratches", "rolling"}
    assert by_class["rolling"]["cause"] == "wear of the rollers"
    assert by_class["rolling"]["alerts"] >= 1
    total = _query(db, "SELECT count(*) AS n FROM detections")[0]["n"]
    assert sum(r["detections"] for r in rows) == total


def test_alerts_with_cause_names_the_roll_the_cause_and_the_acknowledgement(db: sa.Engine) -> None:
    rows = _query(db, "SELECT * FROM alerts_with_cause ORDER BY alert_id")
    roll = next(r for r in rows if r["rule_kind"] == "periodic")
    assert (roll["roll"], roll["class_name"], roll["cause"]) == (
        "F7 top work roll",
        "rolling",
        "wear of the rollers",
    )
    assert roll["surface"] == "top"
    assert rows[0]["acknowledged_by"] == "mira"


def test_every_view_is_documented_with_a_comment(db: sa.Engine) -> None:
    rows = _query(
        db,
        "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c"
        " WHERE c.relname = ANY(:views)",
        views=list(NEW_VIEWS),
    )
    assert {r["relname"] for r in rows} == set(NEW_VIEWS)
    assert all(r["comment"] and len(r["comment"]) > 40 for r in rows)


# ---------------------------------------------------------------------------------------------
# the read-only role
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", NEW_VIEWS)
def test_the_analyst_role_reads_every_view(db: sa.Engine, view: str) -> None:
    assert _query(db, f"SELECT * FROM {view}", role=ANALYST_ROLE)


TABLE_WRITES = [
    "UPDATE alerts SET acknowledged_by = 'analyst'",
    "DELETE FROM detections",
    "UPDATE frames SET strip_id = 'x'",
    "INSERT INTO alerts (dedup_key, rule, class_id, strip_id, severity, position_start_m, position_end_m,"
    " detection_count, evidence) VALUES ('k', 'r', 1, 's', 'low', 0, 1, 1, '{}')",
]
VIEW_WRITES = [
    "INSERT INTO strip_summary (strip_id) VALUES ('x')",
    "UPDATE alerts_with_cause SET severity = 'low'",
    "DELETE FROM alerts_with_cause",
    "UPDATE top_causes SET cause = 'x'",
    "DELETE FROM class_trend_hourly",
    "DELETE FROM class_trend_shift",
    "UPDATE strip_class_summary SET cause = 'x'",
]


@pytest.mark.parametrize("statement", TABLE_WRITES)
def test_the_analyst_role_cannot_insert_update_or_delete_rows(db: sa.Engine, statement: str) -> None:
    with pytest.raises(ProgrammingError, match="permission denied for table"):
        _query(db, statement, role=ANALYST_ROLE)


@pytest.mark.parametrize("statement", VIEW_WRITES)
def test_nobody_can_write_through_the_views(db: sa.Engine, statement: str) -> None:
    """The views aggregate or join, so PostgreSQL refuses writes through them to any role."""
    with pytest.raises(sa.exc.DBAPIError, match=r"cannot (insert into|update|delete from) view"):
        _query(db, statement, role=ANALYST_ROLE)
    with pytest.raises(sa.exc.DBAPIError, match=r"cannot (insert into|update|delete from) view"):
        _query(db, statement)


# ---------------------------------------------------------------------------------------------
# docs/analysts.md
# ---------------------------------------------------------------------------------------------

EXAMPLES = re.findall(r"```sql\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_docs_have_examples_for_the_common_questions() -> None:
    assert len(EXAMPLES) >= 12
    text = " ".join(EXAMPLES)
    for view in NEW_VIEWS:
        assert view in text


@pytest.mark.parametrize("sql", EXAMPLES, ids=[f"example-{n + 1}" for n in range(len(EXAMPLES))])
def test_every_sql_example_of_the_docs_runs_as_the_analyst_and_returns_rows(db: sa.Engine, sql: str) -> None:
    with db.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL ROLE {ANALYST_ROLE}"))
        result = conn.exec_driver_sql(sql)
        rows = result.all() if result.returns_rows else []
    assert rows, f"no rows from:\n{sql}"
