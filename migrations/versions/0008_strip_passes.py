"""strip passes: the pass of each frame and alert, so a strip id used again is a strip of its own

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00+00:00

A strip id may be rolled (and inspected) more than once: each time is a *pass*. Until this revision
the frames of every pass of a strip shared one position axis, so the alerts of a second pass were
read as the first pass's again (and kept quiet by its cooldowns). Now:

- `frames.pass_id` (text, not null, default '1'): the pass the frame belongs to — the camera's
  `pass_id` from frame-meta when it sends one, else the number the worker inferred when it stored
  the frame ('1', '2', …; `worker.storage.passes`). `frames.pass_inferred` (boolean, not null,
  default true) says which. Existing rows are the first pass, inferred ('1', true): the defaults.
- `alerts.pass_id` (text, not null, default '1'): the pass the alert's evidence was seen on.
  Existing alerts are of the first pass, and the dedup keys of first-pass alerts keep their form
  (`worker.alerts.engine.dedup_key`), so no stored key changes.
- Two indexes on `frames` for the alert engine and the pass inference:
  (strip_id, pass_id, surface, position_m) — a pass's frames along the strip — and
  (strip_id, pass_id, captured_at) — a pass's frames in capture order.
- The analysts' views `detections_with_cause` and `alerts_with_cause` gain `pass_id` as their last
  column (`CREATE OR REPLACE VIEW`: the other columns keep their names, types and order, so queries
  and the SELECT grants stay).

The defaults stay on the columns, so that rows written by other hands (or by a worker older than
this revision) are the first pass, as before.

The downgrade drops and re-creates the two views as revision 0007 had them, with their comments and
the analysts' grant, then drops the indexes and the columns: what it loses is which pass a frame or
an alert was of (alerts of later passes keep their own dedup keys, which still differ).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "steel_analyst"

FRAME_PASS_COMMENT = (
    "the pass of the strip this frame shows: frame-meta's pass_id, or the number inferred when it was"
    " stored ('1', '2', ...; see pass_inferred)"
)
FRAME_INFERRED_COMMENT = "true: pass_id was inferred by the worker; false: the camera sent it"
ALERT_PASS_COMMENT = "the pass of the strip the alert's evidence was seen on (frames.pass_id)"
INDEXES = {
    "ix_frames_strip_id_pass_id_surface_position_m": ["strip_id", "pass_id", "surface", "position_m"],
    "ix_frames_strip_id_pass_id_captured_at": ["strip_id", "pass_id", "captured_at"],
}

#: view -> (SELECT with {passes} where the new column goes, comment at 0007)
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
    d.created_at,
    c.display_name AS class_display_name{passes}
FROM detections AS d
JOIN frames AS f ON f.frame_id = d.frame_id
JOIN defect_classes AS c ON c.id = d.class_id
""",
        "Each detection with its strip position, class, cause and preventive action;"
        " class_display_name: the class as people name it",
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
       a.observed_at,
       c.display_name AS class_display_name{passes}
FROM alerts AS a JOIN defect_classes AS c ON c.id = a.class_id
""",
        "Each alert with its class's cause and preventive action, the rule that raised it, the roll a"
        " roll-mark alert names, who acknowledged it when, and where it was seen (line, camera, frames,"
        " highest confidence, model version, time of the evidence); class_display_name: the class as"
        " people name it",
    ),
}
ADDED = {"detections_with_cause": "f.pass_id", "alerts_with_cause": "a.pass_id"}
COMMENT_SUFFIX = "; pass_id: the pass of the strip (a strip id rolled again is another pass)"


def _view_sql(name: str, *, head: bool) -> str:
    verb = "CREATE OR REPLACE VIEW" if head else "CREATE VIEW"
    passes = f",\n       {ADDED[name]}" if head else ""
    return f"{verb} {name} AS" + VIEWS[name][0].format(passes=passes)


def _comment(name: str, *, head: bool) -> str:
    text = VIEWS[name][1] + (COMMENT_SUFFIX if head else "")
    quoted = text.replace("'", "''")
    return f"COMMENT ON VIEW {name} IS '{quoted}'"


def upgrade() -> None:
    op.add_column(
        "frames",
        sa.Column("pass_id", sa.Text(), nullable=False, server_default="1", comment=FRAME_PASS_COMMENT),
    )
    op.add_column(
        "frames",
        sa.Column(
            "pass_inferred",
            sa.Boolean(),
            nullable=False,
            server_default=sa.true(),
            comment=FRAME_INFERRED_COMMENT,
        ),
    )
    op.add_column(
        "alerts",
        sa.Column("pass_id", sa.Text(), nullable=False, server_default="1", comment=ALERT_PASS_COMMENT),
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "frames", columns)
    for name in VIEWS:
        op.execute(_view_sql(name, head=True))
        op.execute(_comment(name, head=True))


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    for name in reversed(list(INDEXES)):
        op.drop_index(name, table_name="frames")
    op.drop_column("alerts", "pass_id")
    op.drop_column("frames", "pass_inferred")
    op.drop_column("frames", "pass_id")
    for name in VIEWS:
        op.execute(_view_sql(name, head=False))
        op.execute(_comment(name, head=False))
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {ANALYST_ROLE}")
