"""analysts' views: strip summaries, hourly and per-shift trends per class, top causes, alerts with cause

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:20:00+00:00

Views (each with a COMMENT; SELECT granted to the read-only role `steel_analyst`):

- `strip_summary`: one row per strip — frames, inspected extent, detections, defects per 100 m,
  first/last defect position, alerts (and how many are unacknowledged).
- `strip_class_summary`: one row per strip and class found — count, per 100 m, first/last
  position along the strip, mean and highest confidence, cause and prevention.
- `class_trend_hourly`: one row per hour with frames and class — detections, strips, frames
  inspected that hour, detections per 1000 frames (zeros included, so trends plot as they are).
- `class_trend_shift`: the same per shift. Shifts are 3 × 8 h starting at the hour
  `steel.first_shift_hour` (a custom setting, default 6: A 06–14, B 14–22, C 22–06), in the
  session's TimeZone. Change them per database or role, e.g.
  `ALTER DATABASE steel SET steel.first_shift_hour = '7'` or `SET TIME ZONE 'Europe/Vienna'`.
  The functions `shift_start(timestamptz)` and `shift_label(timestamptz)` do the arithmetic.
- `top_causes`: each cause (with its prevention and classes) by detections, share, strips,
  alerts and when it was last seen, most frequent first.
- `alerts_with_cause`: the alerts with class name, cause and prevention.

Hours and shifts follow the session's TimeZone (PostgreSQL's `date_trunc` on timestamptz).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "steel_analyst"

FUNCTIONS = {
    "shift_start": """
CREATE FUNCTION shift_start(at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH local AS (
        SELECT (at AT TIME ZONE current_setting('TimeZone')) AS wall,
               make_interval(hours => coalesce(
                   nullif(current_setting('steel.first_shift_hour', true), '')::int, 6)) AS origin
    )
    SELECT (date_trunc('day', wall - origin) + origin
            + (extract(hour FROM wall - origin)::int / 8) * interval '8 hours')
           AT TIME ZONE current_setting('TimeZone')
    FROM local
$$
""",
    "shift_label": """
CREATE FUNCTION shift_label(at timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH start AS (SELECT shift_start(at) AT TIME ZONE current_setting('TimeZone') AS wall)
    SELECT chr(65 + ((extract(hour FROM wall)::int - coalesce(
               nullif(current_setting('steel.first_shift_hour', true), '')::int, 6) + 24) % 24) / 8)
           || ' ' || to_char(wall, 'HH24') || '–' || to_char(wall + interval '8 hours', 'HH24')
    FROM start
$$
""",
}

VIEWS = {
    "strip_summary": (
        """
CREATE VIEW strip_summary AS
WITH strips AS (
    SELECT strip_id,
           min(line) AS line,
           count(*) AS frames,
           min(position_m) AS first_position_m,
           max(position_m + coalesce(length_m, 0)) AS last_position_m,
           sum(detection_count) AS detections,
           min(captured_at) AS first_captured_at,
           max(captured_at) AS last_captured_at
    FROM frames
    GROUP BY strip_id
), found AS (
    SELECT f.strip_id, min(d.along_m) AS first_defect_m, max(d.along_m) AS last_defect_m,
           count(DISTINCT d.class_id) AS classes_found
    FROM detections AS d JOIN frames AS f ON f.frame_id = d.frame_id
    GROUP BY f.strip_id
), raised AS (
    SELECT strip_id, count(*) AS alerts, count(*) FILTER (WHERE acknowledged_at IS NULL) AS unacknowledged
    FROM alerts
    GROUP BY strip_id
)
SELECT s.strip_id,
       s.line,
       s.frames,
       s.first_position_m,
       s.last_position_m,
       s.last_position_m - s.first_position_m AS inspected_m,
       s.detections,
       round((100 * s.detections / nullif(s.last_position_m - s.first_position_m, 0))::numeric, 2)
           AS defects_per_100m,
       coalesce(x.classes_found, 0) AS classes_found,
       x.first_defect_m,
       x.last_defect_m,
       coalesce(r.alerts, 0) AS alerts,
       coalesce(r.unacknowledged, 0) AS unacknowledged_alerts,
       s.first_captured_at,
       s.last_captured_at
FROM strips AS s
LEFT JOIN found AS x ON x.strip_id = s.strip_id
LEFT JOIN raised AS r ON r.strip_id = s.strip_id
""",
        "One row per strip: frames, inspected extent along the strip (first frame start to last"
        " frame end, metres), detections, defects per 100 m of that extent, first/last defect"
        " position, alerts raised and still unacknowledged, first/last capture time",
    ),
    "strip_class_summary": (
        """
CREATE VIEW strip_class_summary AS
SELECT f.strip_id,
       d.class_id,
       c.name AS class_name,
       count(*) AS detections,
       round((100 * count(*) / nullif(min(s.inspected_m), 0))::numeric, 2) AS per_100m,
       min(d.along_m) AS first_position_m,
       max(d.along_m) AS last_position_m,
       round(avg(d.confidence)::numeric, 4) AS mean_confidence,
       max(d.confidence) AS max_confidence,
       c.cause,
       c.prevention
FROM detections AS d
JOIN frames AS f ON f.frame_id = d.frame_id
JOIN defect_classes AS c ON c.id = d.class_id
JOIN strip_summary AS s ON s.strip_id = f.strip_id
GROUP BY f.strip_id, d.class_id, c.name, c.cause, c.prevention
""",
        "One row per strip and class found: detections, per 100 m of the strip's inspected"
        " extent, first/last position along the strip (metres), mean and highest confidence,"
        " the class's cause and preventive action",
    ),
    "class_trend_hourly": (
        """
CREATE VIEW class_trend_hourly AS
WITH hours AS (
    SELECT date_trunc('hour', captured_at) AS hour, count(*) AS frames
    FROM frames
    GROUP BY 1
), found AS (
    SELECT date_trunc('hour', f.captured_at) AS hour, d.class_id, count(*) AS detections,
           count(DISTINCT f.strip_id) AS strips
    FROM detections AS d JOIN frames AS f ON f.frame_id = d.frame_id
    GROUP BY 1, 2
)
SELECT h.hour,
       c.id AS class_id,
       c.name AS class_name,
       coalesce(x.detections, 0) AS detections,
       coalesce(x.strips, 0) AS strips,
       h.frames AS frames_inspected,
       round(1000.0 * coalesce(x.detections, 0) / h.frames, 3) AS per_1000_frames
FROM hours AS h
CROSS JOIN defect_classes AS c
LEFT JOIN found AS x ON x.hour = h.hour AND x.class_id = c.id
""",
        "One row per hour (capture time, session TimeZone) with inspected frames and class:"
        " detections, strips they were on, frames inspected that hour, detections per 1000 frames;"
        " zero rows included",
    ),
    "class_trend_shift": (
        """
CREATE VIEW class_trend_shift AS
WITH shifts AS (
    SELECT shift_start(captured_at) AS shift_start, count(*) AS frames
    FROM frames
    GROUP BY 1
), found AS (
    SELECT shift_start(f.captured_at) AS shift_start, d.class_id, count(*) AS detections,
           count(DISTINCT f.strip_id) AS strips
    FROM detections AS d JOIN frames AS f ON f.frame_id = d.frame_id
    GROUP BY 1, 2
)
SELECT s.shift_start,
       shift_label(s.shift_start) AS shift,
       c.id AS class_id,
       c.name AS class_name,
       coalesce(x.detections, 0) AS detections,
       coalesce(x.strips, 0) AS strips,
       s.frames AS frames_inspected,
       round(1000.0 * coalesce(x.detections, 0) / s.frames, 3) AS per_1000_frames
FROM shifts AS s
CROSS JOIN defect_classes AS c
LEFT JOIN found AS x ON x.shift_start = s.shift_start AND x.class_id = c.id
""",
        "One row per 8-hour shift with inspected frames and class, as class_trend_hourly. Shifts"
        " start at steel.first_shift_hour (default 6: A 06-14, B 14-22, C 22-06) in the session"
        " TimeZone; see shift_start() and shift_label()",
    ),
    "top_causes": (
        """
CREATE VIEW top_causes AS
WITH per_class AS (
    SELECT c.id, c.name, c.cause, c.prevention, count(d.id) AS detections,
           count(DISTINCT f.strip_id) AS strips, max(f.captured_at) AS last_seen
    FROM defect_classes AS c
    LEFT JOIN detections AS d ON d.class_id = c.id
    LEFT JOIN frames AS f ON f.frame_id = d.frame_id
    GROUP BY c.id
), raised AS (
    SELECT class_id, count(*) AS alerts FROM alerts GROUP BY class_id
)
SELECT p.cause,
       p.prevention,
       array_agg(p.name ORDER BY p.id) AS classes,
       sum(p.detections)::bigint AS detections,
       round(100.0 * sum(p.detections) / nullif(sum(sum(p.detections)) OVER (), 0), 1) AS share_percent,
       sum(p.strips)::bigint AS strips,
       coalesce(sum(r.alerts), 0)::bigint AS alerts,
       max(p.last_seen) AS last_seen
FROM per_class AS p
LEFT JOIN raised AS r ON r.class_id = p.id
GROUP BY p.cause, p.prevention
ORDER BY detections DESC, p.cause
""",
        "Each cause with its preventive action and classes: detections, share of all detections"
        " (percent), strips it was found on (summed over its classes), alerts, last seen; most"
        " frequent first",
    ),
    "alerts_with_cause": (
        """
CREATE VIEW alerts_with_cause AS
SELECT a.id AS alert_id,
       a.created_at,
       a.rule,
       a.details ->> 'kind' AS rule_kind,
       a.severity,
       a.strip_id,
       a.details ->> 'surface' AS surface,
       a.class_id,
       c.name AS class_name,
       a.roll,
       a.pitch_m,
       a.position_start_m,
       a.position_end_m,
       a.detection_count,
       a.evidence,
       c.cause,
       c.prevention,
       a.published_at,
       a.acknowledged_by,
       a.acknowledged_at
FROM alerts AS a JOIN defect_classes AS c ON c.id = a.class_id
""",
        "Each alert with its class's cause and preventive action, the rule that raised it, the"
        " roll a roll-mark alert names, and who acknowledged it when",
    ),
}


def upgrade() -> None:
    for sql in FUNCTIONS.values():
        op.execute(sql)
    op.execute(
        "COMMENT ON FUNCTION shift_start(timestamptz) IS 'Start of the 8-hour shift holding the time;"
        " shifts start at steel.first_shift_hour (default 6) in the session TimeZone'"
    )
    op.execute(
        "COMMENT ON FUNCTION shift_label(timestamptz) IS 'A 06–14, B 14–22 or C 22–06 (default hours)'"
    )
    for name, (sql, comment) in VIEWS.items():
        op.execute(sql)
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON VIEW {name} IS '{quoted}'")
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {ANALYST_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(VIEWS)} FROM {ANALYST_ROLE}")
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    for name in reversed(list(FUNCTIONS)):
        op.execute(f"DROP FUNCTION {name}(timestamptz)")
