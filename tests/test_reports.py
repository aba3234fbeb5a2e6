"""`steel-worker report strip|period` on real PostgreSQL: the files, what is in them, and the errors."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import matplotlib.image
import pytest
import sqlalchemy as sa
from alert_strips import T0, Defect, periodic_defects, register, scattered_defects, strip_results

from worker.alerts.config import load_rules
from worker.alerts.engine import AlertEngine
from worker.cli import main
from worker.core.catalogue import load_catalogue
from worker.reports import queries
from worker.storage.writer import StorageWriter

RULES = load_rules()


@pytest.fixture
def filled(engine: sa.Engine) -> sa.Engine:
    """S-0042 (60 m, roll mark + holes cluster + scatter, both surfaces) at 05:00 UTC, S-0043 at 14:30."""
    writer = StorageWriter(engine)
    register(writer)
    roll = RULES.rolls[0]
    top = (
        periodic_defects(roll.pitch_m, 16, seed=1, missing=(5,), first_m=6.0, lane=4)
        + [Defect(30 + n * 0.4, "holes", 0.8, lane=n % 7) for n in range(7)]
        + scattered_defects(20, 55, seed=3, class_name="scratches")
    )
    results = (
        strip_results("S-0042", top, length_m=60.0)
        + strip_results(
            "S-0042", scattered_defects(6, 50, seed=5, class_name="holes"), length_m=60, surface="bottom"
        )
        + strip_results(
            "S-0043",
            scattered_defects(8, 30, seed=6, class_name="scratches"),
            length_m=40.0,
            start=T0 + timedelta(hours=9, minutes=30),
        )
    )
    writer.write_results(results)
    AlertEngine(engine, RULES, load_catalogue()).evaluate_results(results)
    return engine


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_the_strips_queries_count_only_the_strips_given(filled: sa.Engine) -> None:
    """What the demo reads for a set of strips: the ledger's frames and tiles, every class (also
    with 0) with cause and prevention, the alerts in the order raised, the detected (frame, tile,
    class); another strip's rows are never counted, and an unknown strip reads as empty."""
    strips = ["S-0042", "S-0099"]
    detections_sql = (
        "SELECT count(*) FROM detections d JOIN frames f USING (frame_id) WHERE f.strip_id = 'S-0042'"
    )
    with filled.connect() as conn:
        assert queries.strips_totals(conn, strips) == (
            _count(filled, "SELECT count(*) FROM frames WHERE strip_id = 'S-0042'"),
            _count(filled, "SELECT sum(tile_count) FROM frames WHERE strip_id = 'S-0042'"),
        )
        classes = queries.strips_class_counts(conn, ["S-0043"])
        assert [(c["class_name"], c["detections"]) for c in classes] == [
            ("holes", 0),
            ("scratches", 8),
            ("rolling", 0),
        ]
        assert all(c["cause"] and c["prevention"] for c in classes)
        counts = queries.strips_class_counts(conn, strips)
        assert sum(c["detections"] for c in counts) == _count(filled, detections_sql)
        alerts = queries.strips_alerts(conn, strips)
        assert alerts and {a["strip_id"] for a in alerts} == {"S-0042"}
        assert [a["alert_id"] for a in alerts] == sorted(a["alert_id"] for a in alerts)
        roll = next(a for a in alerts if a["rule"] == "roll-marks")
        assert (roll["roll"], roll["rule_kind"], roll["cause"]) == (
            "F7 top work roll",
            "periodic",
            "wear of the rollers",
        )
        frame_ids = queries.strips_frame_ids(conn, strips)
        assert frame_ids and all(f.startswith("S-0042") for f in frame_ids)
        tiles = queries.strips_tile_classes(conn, strips)
        assert len(tiles) == _count(filled, detections_sql) and {f for f, _, _ in tiles} <= frame_ids
        assert queries.strips_totals(conn, ["S-0099"]) == (0, 0)
        assert queries.strips_alerts(conn, ["S-0099"]) == []


def test_report_strip_writes_the_defect_map_markdown_and_csv_tables(
    filled: sa.Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports"
    assert main(["report", "strip", "S-0042", "--out", str(out), "--database-url", database_url]) == 0
    names = [
        "S-0042-defect-map.png",
        "S-0042.md",
        "S-0042-classes.csv",
        "S-0042-detections.csv",
        "S-0042-alerts.csv",
    ]
    assert capsys.readouterr().out.split() == [str(out / n) for n in names]
    image = matplotlib.image.imread(out / "S-0042-defect-map.png")
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # not a blank canvas
    detections = _csv(out / "S-0042-detections.csv")
    assert len(detections) == _count(
        filled, "SELECT count(*) FROM detections d JOIN frames f USING (frame_id) WHERE f.strip_id = 'S-0042'"
    )
    assert {d["surface"] for d in detections} == {"top", "bottom"}
    classes = {row["class_name"]: row for row in _csv(out / "S-0042-classes.csv")}
    assert set(classes) == {"holes", "rolling", "scratches"}
    assert classes["rolling"]["cause"] == "wear of the rollers"
    assert sum(int(r["detections"]) for r in classes.values()) == len(detections)
    alerts = _csv(out / "S-0042-alerts.csv")
    assert {a["rule"] for a in alerts} >= {"roll-marks", "holes-cluster"}
    assert next(a for a in alerts if a["rule"] == "roll-marks")["roll"] == "F7 top work roll"
    markdown = (out / "S-0042.md").read_text(encoding="utf-8")
    assert "# Strip S-0042" in markdown
    assert "![defect map](S-0042-defect-map.png)" in markdown
    assert "| rolling | " in markdown
    assert "| roll-marks | rolling |" in markdown
    assert "regular change of rolls according to wear behaviour" in markdown


def test_report_strip_of_an_unknown_strip_says_so_and_names_recent_strips(
    filled: sa.Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "strip", "S-9999", "--out", str(tmp_path), "--database-url", database_url]) == 2
    assert capsys.readouterr().err == (
        "steel-worker report: error: report strip 'S-9999': no frames of strip 'S-9999' in the database;"
        " recent strips: S-0043, S-0042\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_report_strip_on_an_empty_database_says_it_holds_no_frames(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "strip", "S-1", "--out", str(tmp_path), "--database-url", database_url]) == 2
    assert "the database holds no frames yet" in capsys.readouterr().err


def test_report_period_writes_class_counts_over_time_and_the_top_causes(
    filled: sa.Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "period", "--since", "2026-03-02", "--until", "2026-03-03", "--out", str(tmp_path)]
    assert main([*argv, "--database-url", database_url]) == 0
    stem = "period-20260302T0000-20260303T0000"
    names = [f"{stem}-class-counts.png", f"{stem}.md", f"{stem}-class-counts.csv", f"{stem}-top-causes.csv"]
    assert capsys.readouterr().out.split() == [str(tmp_path / n) for n in names]
    assert matplotlib.image.imread(tmp_path / names[0]).shape[1] > 1000
    counts = _csv(tmp_path / names[2])
    assert sorted({r["bucket"][:16] for r in counts}) == ["2026-03-02T05:00", "2026-03-02T14:00"]
    assert len(counts) == 2 * 3  # every class in every hour with frames
    assert sum(int(r["detections"]) for r in counts) == _count(filled, "SELECT count(*) FROM detections")
    late = {r["class_name"]: int(r["detections"]) for r in counts if r["bucket"].startswith("2026-03-02T14")}
    assert late == {"holes": 0, "scratches": 8, "rolling": 0}
    causes = _csv(tmp_path / names[3])
    assert [int(c["detections"]) for c in causes] == sorted(
        (int(c["detections"]) for c in causes), reverse=True
    )
    assert causes[0]["classes"] == "scratches"
    assert int(next(c for c in causes if c["classes"] == "rolling")["alerts"]) >= 1
    markdown = (tmp_path / names[1]).read_text(encoding="utf-8")
    assert "## Top causes" in markdown
    assert "relative movement between the rolled product and parts of the installation" in markdown


def test_report_period_by_shift_in_a_plant_time_zone(
    filled: sa.Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Times without a zone are read in --timezone; Vienna is UTC+1: 05:00Z is 06:00, shift A."""
    argv = [
        "report",
        "period",
        "--since",
        "2026-03-02T06:00",
        "--until",
        "2026-03-02T22:00",
        "--bucket",
        "shift",
    ]
    assert (
        main([*argv, "--timezone", "Europe/Vienna", "--out", str(tmp_path), "--database-url", database_url])
        == 0
    )
    (counts_csv,) = tmp_path.glob("*-class-counts.csv")
    buckets = sorted({r["bucket"] for r in _csv(counts_csv)})
    assert buckets == ["2026-03-02T06:00:00+01:00", "2026-03-02T14:00:00+01:00"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--since", "2026-03-05", "--until", "2026-03-06"],
            "no frames captured from 2026-03-05T00:00:00+00:00",
        ),
        (
            ["--since", "2026-03-03", "--until", "2026-03-02"],
            "--until 2026-03-02T00:00:00+00:00 must be after --since",
        ),
        (["--since", "yesterday", "--until", "2026-03-02"], "--since: expected an ISO 8601 date or time"),
        (
            ["--since", "2026-03-01", "--until", "2026-03-03", "--timezone", "Mars/Olympus"],
            "--timezone: expected an IANA",
        ),
    ],
)
def test_report_period_refuses_bad_or_empty_periods_with_a_clear_message(
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert main(["report", "period", *argv, "--out", str(tmp_path), "--database-url", database_url]) == 2
    assert message in capsys.readouterr().err


def test_report_out_must_be_a_folder(
    filled: sa.Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "taken"
    file.write_text("x", encoding="utf-8")
    assert main(["report", "strip", "S-0042", "--out", str(file), "--database-url", database_url]) == 2
    assert f"--out {file}: expected a folder, but it is a file" in capsys.readouterr().err


def test_report_without_a_database_names_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["report", "strip", "S-1", "--out", str(tmp_path)]) == 2
    assert "set DATABASE_URL or pass --database-url" in capsys.readouterr().err
