"""camera health: image-quality flags on frames, camera alerts, each camera's run of bad frames

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 23:30:00+00:00

- `frames.quality_flags` (text[], not null, default '{}'): the image-quality checks the frame
  failed (dark, bright, flat, clipped, bit-depth, clock-skew; `worker.streaming.image_quality`).
  A constant default adds the column without rewriting the table; existing frames get '{}'.
- `alerts.class_id` may be NULL, for camera alerts only (`rule_kind = 'camera'`, check
  `ck_alerts_class_unless_camera`): they concern a camera, not a class of defect. Their cause and
  prevention are in `details` (`cause`, `prevention`), written with the alert.
- `camera_health`: one row per camera (line, camera): the current run of frames that failed the
  gate (length, refused, flags, its first frame's coordinates and first frames), the camera
  alert the run raised, and per partition the next offset to count, so that a batch read again
  after a crash counts nothing twice (`worker.alerts.camera`). `steel_worker` may SELECT, INSERT
  and UPDATE it (no DELETE); `steel_analyst` (and the console, its member) may SELECT it.
- `alerts_with_cause` is replaced in place (`CREATE OR REPLACE VIEW`: columns, types and order
  unchanged, so queries and the analysts' grant stay): a LEFT JOIN to the classes, so that camera
  alerts are listed too, with `class_name` and `class_display_name` 'camera' and the cause and
  prevention from their `details`.

The downgrade deletes the camera alerts (a class is required again: they have none; their rows
in `camera_health` go with the table), restores the view of revision 0009, the NOT NULL and the
column comment, and drops the table and the column.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_ROLE = "steel_worker"
ANALYST_ROLE = "steel_analyst"

VIEW = """
CREATE OR REPLACE VIEW alerts_with_cause AS
SELECT a.id AS alert_id,
       a.created_at,
       a.rule,
       a.rule_kind,
       a.severity,
       a.strip_id,
       a.surface,
       a.class_id,
       {class_name} AS class_name,
       a.roll,
       a.pitch_m,
       a.position_start_m,
       a.position_end_m,
       a.detection_count,
       a.evidence,
       {cause} AS cause,
       {prevention} AS prevention,
       a.published_at,
       a.acknowledged_by,
       a.acknowledged_at,
       a.line,
       a.camera,
       a.frame_ids,
       a.max_confidence,
       a.model_version,
       a.observed_at,
       {display_name} AS class_display_name,
       a.pass_id
FROM alerts AS a {join} defect_classes AS c ON c.id = a.class_id
"""
VIEW_AT_HEAD = VIEW.format(
    class_name="coalesce(c.name, a.rule_kind)",
    cause="coalesce(c.cause, a.details ->> 'cause', '')",
    prevention="coalesce(c.prevention, a.details ->> 'prevention', '')",
    display_name="coalesce(c.display_name, a.rule_kind)",
    join="LEFT JOIN",
)
VIEW_AT_0009 = VIEW.format(
    class_name="c.name",
    cause="c.cause",
    prevention="c.prevention",
    display_name="c.display_name",
    join="JOIN",
)
VIEW_COMMENT = (
    "Each alert with its class's cause and preventive action, the rule that raised it, the roll a"
    " roll-mark alert names, who acknowledged it when, and where it was seen (line, camera, frames,"
    " highest confidence, model version, time of the evidence); class_display_name: the class as"
    " people name it; pass_id: the pass of the strip (a strip id rolled again is another pass)"
)
CAMERA_SUFFIX = (
    "; camera alerts (rule_kind camera) have no class: class_id NULL, class_name camera, the cause and"
    " prevention of their image-quality checks"
)


def _comment(text: str) -> str:
    quoted = text.replace("'", "''")
    return f"COMMENT ON VIEW alerts_with_cause IS '{quoted}'"


def upgrade() -> None:
    op.add_column(
        "frames",
        sa.Column(
            "quality_flags",
            ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
            comment=(
                "image-quality checks the frame failed (dark, bright, flat, clipped, bit-depth,"
                " clock-skew); empty for a good frame; the alert rules skip the detections of a frame"
                " with an image flag"
            ),
        ),
    )
    op.alter_column(
        "alerts",
        "class_id",
        existing_type=sa.Integer(),
        nullable=True,
        comment="the class of the evidence; NULL for camera alerts (rule_kind camera)",
    )
    op.create_check_constraint(
        op.f("ck_alerts_class_unless_camera"), "alerts", "class_id IS NOT NULL OR rule_kind = 'camera'"
    )
    op.create_table(
        "camera_health",
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("camera", sa.Text(), nullable=False),
        sa.Column(
            "run_frames",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="frames in the camera's run of flagged or refused frames (0: its last frame was good)",
        ),
        sa.Column("run_refused", sa.Integer(), server_default="0", nullable=False, comment="of them refused"),
        sa.Column(
            "run_flags",
            JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="image-quality check -> frames of the run that failed it",
        ),
        sa.Column(
            "run_first",
            sa.Text(),
            nullable=True,
            comment="Kafka coordinates of the run's first frame (topic[p]@offset)",
        ),
        sa.Column(
            "run_evidence",
            JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
            comment="the run's first CAMERA_ALERT_FRAMES frames: frame id, strip, surface, position",
        ),
        sa.Column(
            "alert_id",
            sa.BigInteger(),
            nullable=True,
            comment="the camera alert this run raised; NULL while it has not",
        ),
        sa.Column(
            "positions",
            JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="topic[partition] -> the next offset to count: a frame read again is not counted twice",
        ),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "run_frames >= 0 AND run_refused >= 0 AND run_refused <= run_frames",
            name=op.f("ck_camera_health_run_counts"),
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_camera_health_alert_id_alerts"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("line", "camera", name=op.f("pk_camera_health")),
        comment=(
            "The image-quality state of each camera: its current run of flagged or refused frames, and"
            " the camera alert the run raised (worker.alerts.camera); rows are locked FOR UPDATE while"
            " a batch is counted"
        ),
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON camera_health TO {WORKER_ROLE}")
    op.execute(f"GRANT SELECT ON camera_health TO {ANALYST_ROLE}")
    op.execute(VIEW_AT_HEAD)
    op.execute(_comment(VIEW_COMMENT + CAMERA_SUFFIX))


def downgrade() -> None:
    op.execute(VIEW_AT_0009)
    op.execute(_comment(VIEW_COMMENT))
    op.drop_table("camera_health")
    op.execute("DELETE FROM alerts WHERE class_id IS NULL")
    op.drop_constraint(op.f("ck_alerts_class_unless_camera"), "alerts", type_="check")
    op.alter_column("alerts", "class_id", existing_type=sa.Integer(), nullable=False, comment=None)
    op.drop_column("frames", "quality_flags")
