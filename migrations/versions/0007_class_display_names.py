"""class display names: the name people read beside each class's machine name

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00+00:00

- `defect_classes.display_name` (text, not null): what reports, alert text and the console show
  for a class ("Rolled-in Scale"), next to `name`, the machine name every table, message and rule
  uses ("rolled-in_scale"). Existing rows get their name; the worker's catalogue upsert keeps it
  up to date from the catalogue (`DefectClass.display_name`, the name when the catalogue has none).
- The analysts' views that show a class name gain `class_display_name` as their last column
  (`CREATE OR REPLACE VIEW`: the other columns keep their names, types and order, so queries and
  the SELECT grants stay): `detections_with_cause`, `strip_class_summary`, `class_trend_hourly`,
  `class_trend_shift`, `alerts_with_cause`; `top_causes` gains `class_display_names` beside
  `classes`.

The downgrade drops and re-creates those views as revision 0006 had them (CREATE OR REPLACE cannot
drop columns), with their comments and the analysts' grant, then drops the column.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "steel_analyst"

#: view -> (SELECT with {display} where the new column goes and {group} for its GROUP BY, comment
#: at 0006). `{display}` is ",\n       <expr> AS class_display_name" at head, "" at 0006.
VIEWS: dict[str, tuple[str, str]] = {
    "detections_with_cause": (
        """
SELECT
    d.id AS detection_id,
    d.frame_id,
    f.strip_id,
    f.line,
    f.camera,
    f.surface,
    d.tile_index,
    d.class_id,
    c.name AS class_name,
    c.type AS defect_type,
    d.confidence,
    d.threshold,
    d.along_m,
    d.across_mm,
    d.along_start_m,
    d.along_end_m,
    c.cause,
    c.prevention,
    f.model_version,
    f.captured_at,
    f.processed_at,
    d.created_at{display}
FROM detections AS d
JOIN frames AS f ON f.frame_id = d.frame_id
JOIN defect_classes AS c ON c.id = d.class_id
""",
        "Each detection with its strip position, class, cause and preventive action",
    ),
    "strip_class_summary": (
        """
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
       c.prevention{display}
FROM detections AS d
JOIN frames AS f ON f.frame_id = d.frame_id
JOIN defect_classes AS c ON c.id = d.class_id
JOIN strip_summary AS s ON s.strip_id = f.strip_id
GROUP BY f.strip_id, d.class_id, c.name, c.cause, c.prevention{group}
""",
        "One row per strip and class found: detections, per 100 m of the strip's inspected"
        " extent, first/last position along the strip (metres), mean and highest confidence,"
        " the class's cause and preventive action",
    ),
    "class_trend_hourly": (
        """
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
       round(1000.0 * coalesce(x.detections, 0) / h.frames, 3) AS per_1000_frames{display}
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
       round(1000.0 * coalesce(x.detections, 0) / s.frames, 3) AS per_1000_frames{display}
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
WITH per_class AS (
    SELECT c.id, c.name, c.cause, c.prevention, count(d.id) AS detections,
           count(DISTINCT f.strip_id) AS strips, max(f.captured_at) AS last_seen{group}
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
       max(p.last_seen) AS last_seen{display}
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
SELECT a.id AS alert_id,
       a.created_at,
       a.rule,
       a.rule_kind,
       a.severity,
       a.strip_id,
       a.surface,
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
       a.acknowledged_at,
       a.line,
       a.camera,
       a.frame_ids,
       a.max_confidence,
       a.model_version,
       a.observed_at{display}
FROM alerts AS a JOIN defect_classes AS c ON c.id = a.class_id
""",
        "Each alert with its class's cause and preventive action, the rule that raised it, the roll a"
        " roll-mark alert names, who acknowledged it when, and where it was seen (line, camera, frames,"
        " highest confidence, model version, time of the evidence)",
    ),
}

#: view -> (the column added at head, its GROUP BY / CTE addition)
ADDED: dict[str, tuple[str, str]] = {
    "detections_with_cause": ("c.display_name AS class_display_name", ""),
    "strip_class_summary": ("c.display_name AS class_display_name", ", c.display_name"),
    "class_trend_hourly": ("c.display_name AS class_display_name", ""),
    "class_trend_shift": ("c.display_name AS class_display_name", ""),
    "top_causes": ("array_agg(p.display_name ORDER BY p.id) AS class_display_names", ", c.display_name"),
    "alerts_with_cause": ("c.display_name AS class_display_name", ""),
}

COMMENT_SUFFIX = {
    "top_causes": "; class_display_names: the classes as people name them",
}


def _view_sql(name: str, *, head: bool) -> str:
    body, _ = VIEWS[name]
    column, group = ADDED[name]
    verb = "CREATE OR REPLACE VIEW" if head else "CREATE VIEW"
    display = f",\n       {column}" if head else ""
    return f"{verb} {name} AS" + body.format(display=display, group=group if head else "")


def _comment(name: str, *, head: bool) -> str:
    text = VIEWS[name][1]
    if head:
        text += COMMENT_SUFFIX.get(name, "; class_display_name: the class as people name it")
    quoted = text.replace("'", "''")
    return f"COMMENT ON VIEW {name} IS '{quoted}'"


def upgrade() -> None:
    op.add_column(
        "defect_classes",
        sa.Column(
            "display_name",
            sa.Text(),
            nullable=True,
            comment="the class as people name it (reports, alerts, console); name is the machine name",
        ),
    )
    op.execute("UPDATE defect_classes SET display_name = name")
    op.alter_column("defect_classes", "display_name", nullable=False)
    for name in VIEWS:
        op.execute(_view_sql(name, head=True))
        op.execute(_comment(name, head=True))


def downgrade() -> None:
    # strip_class_summary depends on strip_summary only, which this revision leaves alone.
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_column("defect_classes", "display_name")
    for name in VIEWS:
        op.execute(_view_sql(name, head=False))
        op.execute(_comment(name, head=False))
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {ANALYST_ROLE}")
