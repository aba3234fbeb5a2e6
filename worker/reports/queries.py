"""What the reports and the demo read: the analysts' views (migration 0002), `detections_with_cause`
and the frames ledger.

Every function takes an open connection; times are read in the connection's TimeZone (the report
commands set it). Nothing here writes. The `strips_*` functions read a set of strips at once (the
demo's live view and summary, `worker.demo`); each counts only frames, detections and alerts of
those strips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from worker.core.errors import ConfigError

BUCKETS = {
    "hour": "date_trunc('hour', f.captured_at)",
    "shift": "shift_start(f.captured_at)",
    "day": "date_trunc('day', f.captured_at)",
}


@dataclass(frozen=True)
class StripData:
    """Everything a strip report shows."""

    strip_id: str
    summary: dict[str, Any]
    classes: list[dict[str, Any]]
    detections: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    surfaces: list[str]


def _rows(conn: sa.Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def recent_strips(conn: sa.Connection, limit: int = 5) -> list[str]:
    return list(
        conn.execute(
            sa.text("SELECT strip_id FROM frames GROUP BY strip_id ORDER BY max(captured_at) DESC LIMIT :n"),
            {"n": limit},
        ).scalars()
    )


def strip_data(conn: sa.Connection, strip_id: str) -> StripData:
    """The strip's summary, classes, detections and alerts; ConfigError naming recent strips if
    the database has no frame of `strip_id`."""
    summary = _rows(conn, "SELECT * FROM strip_summary WHERE strip_id = :s", s=strip_id)
    if not summary:
        recent = recent_strips(conn)
        hint = f"; recent strips: {', '.join(recent)}" if recent else "; the database holds no frames yet"
        raise ConfigError(f"report strip {strip_id!r}: no frames of strip {strip_id!r} in the database{hint}")
    classes = _rows(
        conn,
        "SELECT class_name, detections, per_100m, first_position_m, last_position_m, mean_confidence,"
        " max_confidence, cause, prevention, class_display_name FROM strip_class_summary WHERE strip_id = :s"
        " ORDER BY detections DESC, class_id",
        s=strip_id,
    )
    detections = _rows(
        conn,
        "SELECT detection_id, frame_id, surface, camera, class_name, confidence, along_m, across_mm,"
        " along_start_m, along_end_m, captured_at, class_display_name FROM detections_with_cause"
        " WHERE strip_id = :s"
        " ORDER BY along_m, detection_id",
        s=strip_id,
    )
    alerts = _rows(
        conn,
        "SELECT v.alert_id, v.created_at, v.rule, v.rule_kind, v.severity, v.surface, v.class_name,"
        " v.roll, v.pitch_m, v.position_start_m, v.position_end_m, v.detection_count, v.cause,"
        " v.prevention, v.acknowledged_by, v.acknowledged_at, v.class_display_name,"
        " a.details -> 'mark_positions_m' AS mark_positions_m"
        " FROM alerts_with_cause AS v JOIN alerts AS a ON a.id = v.alert_id"
        " WHERE v.strip_id = :s ORDER BY v.position_start_m, v.alert_id",
        s=strip_id,
    )
    surfaces = list(
        conn.execute(
            sa.text("SELECT DISTINCT surface FROM frames WHERE strip_id = :s ORDER BY surface"),
            {"s": strip_id},
        ).scalars()
    )
    return StripData(strip_id, summary[0], classes, detections, alerts, surfaces)


@dataclass(frozen=True)
class PeriodData:
    """Class counts per time bucket and the top causes, between `since` and `until`."""

    since: datetime
    until: datetime
    bucket: str
    counts: list[dict[str, Any]]  # bucket, class_name, detections, frames (one row per bucket and class)
    causes: list[dict[str, Any]]
    frames: int
    strips: int


def period_data(conn: sa.Connection, since: datetime, until: datetime, bucket: str) -> PeriodData:
    """ConfigError if the bucket is unknown or no frame was captured in [since, until)."""
    if bucket not in BUCKETS:
        raise ConfigError(f"--bucket: expected one of {sorted(BUCKETS)}, received {bucket!r}")
    window = {"since": since, "until": until}
    totals = conn.execute(
        sa.text(
            "SELECT count(*) AS frames, count(DISTINCT strip_id) AS strips FROM frames"
            " WHERE captured_at >= :since AND captured_at < :until"
        ),
        window,
    ).one()
    if totals.frames == 0:
        raise ConfigError(
            f"report period: no frames captured from {since.isoformat()} until {until.isoformat()};"
            " check --since/--until (times without a zone are read in --timezone)"
        )
    key = BUCKETS[bucket]
    counts = _rows(
        conn,
        f"""
        WITH buckets AS (
            SELECT {key} AS bucket, count(*) AS frames FROM frames AS f
            WHERE f.captured_at >= :since AND f.captured_at < :until GROUP BY 1
        ), found AS (
            SELECT {key} AS bucket, d.class_id, count(*) AS detections
            FROM detections AS d JOIN frames AS f ON f.frame_id = d.frame_id
            WHERE f.captured_at >= :since AND f.captured_at < :until GROUP BY 1, 2
        )
        SELECT b.bucket, c.name AS class_name, coalesce(x.detections, 0) AS detections, b.frames,
               c.display_name AS class_display_name
        FROM buckets AS b CROSS JOIN defect_classes AS c
        LEFT JOIN found AS x ON x.bucket = b.bucket AND x.class_id = c.id
        ORDER BY b.bucket, c.id
        """,
        **window,
    )
    causes = _rows(
        conn,
        """
        WITH hits AS (
            SELECT d.id, d.class_id, f.strip_id
            FROM detections AS d JOIN frames AS f ON f.frame_id = d.frame_id
            WHERE f.captured_at >= :since AND f.captured_at < :until
        ), per_class AS (
            SELECT c.id, c.name, c.display_name, c.cause, c.prevention, count(h.id) AS detections,
                   count(DISTINCT h.strip_id) AS strips
            FROM defect_classes AS c LEFT JOIN hits AS h ON h.class_id = c.id
            GROUP BY c.id
        ), raised AS (
            SELECT class_id, count(*) AS alerts FROM alerts
            WHERE coalesce(observed_at, created_at) >= :since
              AND coalesce(observed_at, created_at) < :until
            GROUP BY class_id
        )
        SELECT p.cause, p.prevention, string_agg(p.name, ', ' ORDER BY p.id) AS classes,
               sum(p.detections)::bigint AS detections,
               round(100.0 * sum(p.detections) / nullif(sum(sum(p.detections)) OVER (), 0), 1)
                   AS share_percent,
               sum(p.strips)::bigint AS strips, coalesce(sum(r.alerts), 0)::bigint AS alerts,
               string_agg(p.display_name, ', ' ORDER BY p.id) AS class_display_names
        FROM per_class AS p LEFT JOIN raised AS r ON r.class_id = p.id
        GROUP BY p.cause, p.prevention
        ORDER BY detections DESC, p.cause
        """,
        **window,
    )
    return PeriodData(since, until, bucket, counts, causes, int(totals.frames), int(totals.strips))


def strips_totals(conn: sa.Connection, strip_ids: Sequence[str]) -> tuple[int, int]:
    """(frames, tiles) the ledger holds for `strip_ids`; (0, 0) when it holds none of them."""
    frames, tiles = conn.execute(
        sa.text("SELECT count(*), coalesce(sum(tile_count), 0) FROM frames WHERE strip_id = ANY(:s)"),
        {"s": list(strip_ids)},
    ).one()
    return int(frames), int(tiles)


def strips_evidence(conn: sa.Connection, strip_ids: Sequence[str]) -> tuple[int, int]:
    """(crops, bytes of their images) that `tile_images` holds for the frames of `strip_ids`."""
    crops, size = conn.execute(
        sa.text(
            "SELECT count(*), coalesce(sum(octet_length(i.image)), 0) FROM tile_images AS i"
            " JOIN frames AS f ON f.frame_id = i.frame_id WHERE f.strip_id = ANY(:s)"
        ),
        {"s": list(strip_ids)},
    ).one()
    return int(crops), int(size)


def strips_class_counts(conn: sa.Connection, strip_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every catalogue class in catalogue order, also with no detection (0): class_name, cause,
    prevention and its detections on `strip_ids` (`detections_with_cause`)."""
    return _rows(
        conn,
        """
        SELECT c.name AS class_name, c.cause, c.prevention, count(d.detection_id) AS detections
        FROM defect_classes AS c
        LEFT JOIN detections_with_cause AS d ON d.class_id = c.id AND d.strip_id = ANY(:s)
        GROUP BY c.id, c.name, c.cause, c.prevention
        ORDER BY c.id
        """,
        s=list(strip_ids),
    )


def strips_alerts(conn: sa.Connection, strip_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The alerts raised on `strip_ids` in the order raised (`alerts_with_cause`): rule, kind,
    severity, class, strip, roll and pitch, position range, detections, cause and prevention."""
    return _rows(
        conn,
        "SELECT alert_id, rule, rule_kind, severity, class_name, strip_id, roll, pitch_m,"
        " position_start_m, position_end_m, detection_count, cause, prevention"
        " FROM alerts_with_cause WHERE strip_id = ANY(:s) ORDER BY alert_id",
        s=list(strip_ids),
    )


def strips_frame_ids(conn: sa.Connection, strip_ids: Sequence[str]) -> set[str]:
    """The ids of the frames the ledger holds for `strip_ids` (the frames the worker has written)."""
    return set(
        conn.execute(
            sa.text("SELECT frame_id FROM frames WHERE strip_id = ANY(:s)"), {"s": list(strip_ids)}
        ).scalars()
    )


def strips_tile_classes(conn: sa.Connection, strip_ids: Sequence[str]) -> list[tuple[str, int, str]]:
    """(frame id, tile index, class name) of every detection on `strip_ids` (`detections_with_cause`),
    in no particular order."""
    rows = conn.execute(
        sa.text(
            "SELECT frame_id, tile_index, class_name FROM detections_with_cause WHERE strip_id = ANY(:s)"
        ),
        {"s": list(strip_ids)},
    )
    return [(frame_id, int(tile_index), name) for frame_id, tile_index, name in rows]
