"""The month partitions of tile_images (`worker.storage.partitions`) and `steel-worker db
partitions` / `db prune`, on real PostgreSQL: rows land in their month, the default partition
catches the rest and gives them up when their month is made, prune drops what is old and nothing
else."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from worker.core.errors import ConfigError
from worker.storage import command, partitions
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
