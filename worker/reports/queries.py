"""What the reports read: the analysts' views (migration 0002) and `detections_with_cause`.

Every function takes an open connection; times are read in the connection's TimeZone (the report
commands set it). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from worker.errors import ConfigError

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
        " max_confidence, cause, prevention FROM strip_class_summary WHERE strip_id = :s"
        " ORDER BY detections DESC, class_id",
        s=strip_id,
    )
    detections = _rows(
        conn,
        "SELECT detection_id, frame_id, surface, camera, class_name, confidence, along_m, across_mm,"
        " along_start_m, along_end_m, captured_at FROM detections_with_cause WHERE strip_id = :s"
        " ORDER BY along_m, detection_id",
        s=strip_id,
    )
    alerts = _rows(
        conn,
        "SELECT v.alert_id, v.created_at, v.rule, v.rule_kind, v.severity, v.surface, v.class_name,"
        " v.roll, v.pitch_m, v.position_start_m, v.position_end_m, v.detection_count, v.cause,"
        " v.prevention, v.acknowledged_by, v.acknowledged_at,"
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
        SELECT b.bucket, c.name AS class_name, coalesce(x.detections, 0) AS detections, b.frames
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
            SELECT c.id, c.name, c.cause, c.prevention, count(h.id) AS detections,
                   count(DISTINCT h.strip_id) AS strips
            FROM defect_classes AS c LEFT JOIN hits AS h ON h.class_id = c.id
            GROUP BY c.id
        ), raised AS (
            SELECT class_id, count(*) AS alerts FROM alerts
            WHERE coalesce((details ->> 'observed_at')::timestamptz, created_at) >= :since
              AND coalesce((details ->> 'observed_at')::timestamptz, created_at) < :until
            GROUP BY class_id
        )
        SELECT p.cause, p.prevention, string_agg(p.name, ', ' ORDER BY p.id) AS classes,
               sum(p.detections)::bigint AS detections,
               round(100.0 * sum(p.detections) / nullif(sum(sum(p.detections)) OVER (), 0), 1)
                   AS share_percent,
               sum(p.strips)::bigint AS strips, coalesce(sum(r.alerts), 0)::bigint AS alerts
        FROM per_class AS p LEFT JOIN raised AS r ON r.class_id = p.id
        GROUP BY p.cause, p.prevention
        ORDER BY detections DESC, p.cause
        """,
        **window,
    )
    return PeriodData(since, until, bucket, counts, causes, int(totals.frames), int(totals.strips))
