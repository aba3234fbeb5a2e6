"""alert columns: what every alert has moves out of alerts.details into typed columns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 17:30:00+00:00

Until this revision the alert engine wrote eight facts every alert has — the rule's kind, the
strip surface, line, camera, the frames behind it, the highest confidence among its detections,
the model version and when the evidence was observed — into the JSONB bag `alerts.details`, and
the outbox, `alerts list`, the analysts' view and the engine itself parsed them back out. They are
now columns of their own (`rule_kind`, `surface`, `line`, `camera`, `frame_ids`,
`max_confidence`, `model_version`, `observed_at`), typed and constrained; `details` keeps only
what the rule measured (window and count, marks, revolutions, chance, mark positions, …), which is
what alert.v1's `details` always said it held.

The upgrade backfills the columns from `details` and removes those keys from it, in one statement.
The worker always wrote every key, so on a database the worker filled nothing is invented; a row
written by other hands without a key gets '' (text), an empty list (frame ids) or 0 (highest
confidence) for it, and NULL for `observed_at`, which may be unknown.

`alerts_with_cause` is replaced in place (`CREATE OR REPLACE VIEW`: its columns keep their names,
types and order, reading the new columns; `line`, `camera`, `frame_ids`, `max_confidence`,
`model_version` and `observed_at` are appended), so the analysts' SELECT grant on it stays.

The downgrade folds the columns back into `details` and restores the view of revision 0002.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: column -> the details key it came from
MOVED = {
    "rule_kind": "kind",
    "surface": "surface",
    "line": "line",
    "camera": "camera",
    "frame_ids": "frame_ids",
    "max_confidence": "max_confidence",
    "model_version": "model_version",
    "observed_at": "observed_at",
}

BACKFILL = """
UPDATE alerts SET
    rule_kind = coalesce(details ->> 'kind', ''),
    surface = coalesce(details ->> 'surface', ''),
    line = coalesce(details ->> 'line', ''),
    camera = coalesce(details ->> 'camera', ''),
    frame_ids = coalesce(
        ARRAY(SELECT jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(details -> 'frame_ids') = 'array' THEN details -> 'frame_ids' END
        )),
        '{}'
    ),
    max_confidence = coalesce((details ->> 'max_confidence')::real, 0),
    model_version = coalesce(details ->> 'model_version', ''),
    observed_at = (details ->> 'observed_at')::timestamptz,
    details = details - ARRAY['kind', 'surface', 'line', 'camera', 'frame_ids', 'max_confidence',
                              'model_version', 'observed_at']
"""

FOLD_BACK = """
UPDATE alerts SET details = details || jsonb_build_object(
    'kind', rule_kind, 'surface', surface, 'line', line, 'camera', camera,
    'frame_ids', to_jsonb(frame_ids), 'max_confidence', max_confidence,
    'model_version', model_version, 'observed_at', observed_at
)
"""

VIEW_COLUMNS = """
SELECT a.id AS alert_id,
       a.created_at,
       a.rule,
       {rule_kind} AS rule_kind,
       a.severity,
       a.strip_id,
       {surface} AS surface,
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
       a.acknowledged_at{appended}
FROM alerts AS a JOIN defect_classes AS c ON c.id = a.class_id
"""

VIEW_AT_HEAD = "CREATE OR REPLACE VIEW alerts_with_cause AS" + VIEW_COLUMNS.format(
    rule_kind="a.rule_kind",
    surface="a.surface",
    appended=(
        ",\n       a.line,\n       a.camera,\n       a.frame_ids,\n       a.max_confidence,"
        "\n       a.model_version,\n       a.observed_at"
    ),
)
VIEW_AT_0002 = "CREATE VIEW alerts_with_cause AS" + VIEW_COLUMNS.format(
    rule_kind="a.details ->> 'kind'", surface="a.details ->> 'surface'", appended=""
)
VIEW_COMMENT = (
    "Each alert with its class's cause and preventive action, the rule that raised it, the roll a"
    " roll-mark alert names, who acknowledged it when, and where it was seen (line, camera, frames,"
    " highest confidence, model version, time of the evidence)"
)
VIEW_COMMENT_AT_0002 = (
    "Each alert with its class's cause and preventive action, the rule that raised it, the"
    " roll a roll-mark alert names, and who acknowledged it when"
)


def _columns() -> list[sa.Column]:
    return [
        sa.Column(
            "rule_kind", sa.Text(), nullable=True, comment="the kind of the rule: density, periodic, ..."
        ),
        sa.Column("surface", sa.Text(), nullable=True, comment="strip surface the evidence was seen on"),
        sa.Column("line", sa.Text(), nullable=True, comment="line of the evidence's first camera"),
        sa.Column("camera", sa.Text(), nullable=True, comment="camera of the evidence (the first by name)"),
        sa.Column("frame_ids", ARRAY(sa.Text()), nullable=True, comment="frames of the evidence, sorted"),
        sa.Column("max_confidence", sa.REAL(), nullable=True, comment="highest confidence of the evidence"),
        sa.Column(
            "model_version", sa.Text(), nullable=True, comment="model version of the evidence (the newest)"
        ),
        sa.Column(
            "observed_at",
            sa.TIMESTAMP(timezone=True),
            nullable=True,
            comment="capture time of the evidence that completed the finding; NULL when unknown",
        ),
    ]


def upgrade() -> None:
    for column in _columns():
        op.add_column("alerts", column)
    op.execute(BACKFILL)
    for name in MOVED:
        if name != "observed_at":
            op.alter_column("alerts", name, nullable=False)
    op.create_check_constraint(
        op.f("ck_alerts_max_confidence_range"), "alerts", "max_confidence >= 0 AND max_confidence <= 1"
    )
    op.execute(VIEW_AT_HEAD)
    quoted = VIEW_COMMENT.replace("'", "''")
    op.execute(f"COMMENT ON VIEW alerts_with_cause IS '{quoted}'")


def downgrade() -> None:
    op.execute(FOLD_BACK)
    # CREATE OR REPLACE cannot drop view columns: the view of 0002 is made again (and granted again).
    op.execute("DROP VIEW alerts_with_cause")
    op.execute(VIEW_AT_0002)
    quoted = VIEW_COMMENT_AT_0002.replace("'", "''")
    op.execute(f"COMMENT ON VIEW alerts_with_cause IS '{quoted}'")
    op.execute("GRANT SELECT ON alerts_with_cause TO steel_analyst")
    op.drop_constraint(op.f("ck_alerts_max_confidence_range"), "alerts", type_="check")
    for name in reversed(list(MOVED)):
        op.drop_column("alerts", name)
