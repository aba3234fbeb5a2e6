"""defect database: catalogue, models, frame ledger, detections, alerts; analysts' view and role

Revision ID: 0001
Revises: nothing (first revision)
Create Date: 2026-11-26 12:54:38+00:00

Seeds `defect_classes` from the default catalogue file (`worker/core/catalogues/paper.json`, read with
`worker.core.catalogue.load_catalogue`), so the catalogue stays data. Creates the view
`detections_with_cause` and the read-only role `steel_analyst` (NOLOGIN; grant it to analysts'
login roles). Roles are cluster-wide: the role is created only if missing, privileges are granted
and revoked in this database only, and the downgrade drops the role only when no other database
still grants it anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from worker.core.catalogue import load_catalogue

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "steel_analyst"
READABLE = ("defect_classes", "models", "frames", "detections", "alerts", "detections_with_cause")

DETECTIONS_WITH_CAUSE = """
CREATE VIEW detections_with_cause AS
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
    d.created_at
FROM detections AS d
JOIN frames AS f ON f.frame_id = d.frame_id
JOIN defect_classes AS c ON c.id = d.class_id
"""

CREATE_ROLE_IF_MISSING = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
        CREATE ROLE {ANALYST_ROLE} NOLOGIN;
    END IF;
EXCEPTION
    -- another database's migration created it at the same moment
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$
"""

DROP_ROLE_IF_UNUSED = f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
        DROP ROLE {ANALYST_ROLE};
    END IF;
EXCEPTION
    -- another database on this server still grants the role privileges: keep it
    WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role {ANALYST_ROLE} kept: other databases still use it';
END
$$
"""


def _timestamp(name: str, *, nullable: bool = False, default_now: bool = False) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.TIMESTAMP(timezone=True),
        server_default=sa.text("now()") if default_now else None,
        nullable=nullable,
    )


def _jsonb(name: str, **options: object) -> sa.Column[object]:
    return sa.Column(name, postgresql.JSONB(astext_type=sa.Text()), **options)  # type: ignore[arg-type]


def upgrade() -> None:
    defect_classes = op.create_table(
        "defect_classes",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False, comment="catalogue id"),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("features", sa.Text(), server_default="", nullable=False),
        sa.Column("type", sa.Text(), server_default="", nullable=False),
        sa.Column("cause", sa.Text(), server_default="", nullable=False),
        sa.Column("automatic_inspection", sa.Text(), server_default="", nullable=False),
        sa.Column("prevention", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defect_classes")),
        sa.UniqueConstraint("name", name=op.f("uq_defect_classes_name")),
        comment="The defect catalogue: each class with its cause and preventive action",
    )
    op.create_table(
        "models",
        sa.Column("version", sa.Text(), nullable=False, comment="sha256 of the weights file"),
        sa.Column("backbone", sa.Text(), nullable=False),
        sa.Column(
            "input_size", sa.Integer(), nullable=False, comment="tile side in pixels fed to the network"
        ),
        sa.Column(
            "class_names",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            comment="output order of the network",
        ),
        _jsonb("thresholds", nullable=False, comment="class name -> decision threshold"),
        _jsonb("metrics", server_default=sa.text("'{}'::jsonb"), nullable=False),
        _timestamp("registered_at", default_now=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_models")),
        comment="Classifier versions that wrote detections",
    )
    op.create_table(
        "frames",
        sa.Column("frame_id", sa.Text(), nullable=False),
        sa.Column("strip_id", sa.Text(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("camera", sa.Text(), nullable=False),
        sa.Column("surface", sa.Text(), nullable=False),
        _timestamp("captured_at"),
        sa.Column(
            "position_m", sa.Float(), nullable=False, comment="along the strip, of the frame's first row"
        ),
        sa.Column("length_m", sa.Float(), nullable=True, comment="extent along the strip"),
        sa.Column("width_mm", sa.Float(), nullable=True, comment="extent across the strip"),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("kafka_topic", sa.Text(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("tile_count", sa.Integer(), nullable=False),
        sa.Column("detection_count", sa.Integer(), nullable=False),
        _timestamp("processed_at"),
        sa.CheckConstraint(
            "tile_count >= 0 AND detection_count >= 0", name=op.f("ck_frames_counts_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["model_version"], ["models.version"], name=op.f("fk_frames_model_version_models")
        ),
        sa.PrimaryKeyConstraint("frame_id", name=op.f("pk_frames")),
        comment="Ledger of processed frames: one row per frame id, written with its detections",
    )
    op.create_index("ix_frames_strip_id_position_m", "frames", ["strip_id", "position_m"])
    op.create_table(
        "detections",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("frame_id", sa.Text(), nullable=False),
        sa.Column("tile_index", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.REAL(), nullable=False),
        sa.Column("threshold", sa.REAL(), nullable=False, comment="the class threshold the model used"),
        sa.Column("along_m", sa.Float(), nullable=False, comment="tile centre, metres from the strip head"),
        sa.Column("across_mm", sa.Float(), nullable=False, comment="tile centre, mm from the strip edge"),
        sa.Column("along_start_m", sa.Float(), nullable=False),
        sa.Column("along_end_m", sa.Float(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False, comment="tile window in frame pixels"),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        _timestamp("created_at", default_now=True),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name=op.f("ck_detections_confidence_range")
        ),
        sa.ForeignKeyConstraint(
            ["class_id"], ["defect_classes.id"], name=op.f("fk_detections_class_id_defect_classes")
        ),
        sa.ForeignKeyConstraint(
            ["frame_id"],
            ["frames.frame_id"],
            name=op.f("fk_detections_frame_id_frames"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detections")),
        sa.UniqueConstraint(
            "frame_id", "tile_index", "class_id", name=op.f("uq_detections_frame_id_tile_index_class_id")
        ),
        comment="One row per frame, tile and class found over its threshold",
    )
    op.create_index("ix_detections_class_id_created_at", "detections", ["class_id", "created_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("strip_id", sa.Text(), nullable=False),
        sa.Column("roll", sa.Text(), nullable=True, comment="roll named by a periodic (roll mark) alert"),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("position_start_m", sa.Float(), nullable=False),
        sa.Column("position_end_m", sa.Float(), nullable=False),
        sa.Column("detection_count", sa.Integer(), nullable=False),
        sa.Column("pitch_m", sa.REAL(), nullable=True),
        sa.Column("evidence", postgresql.ARRAY(sa.BigInteger()), nullable=False, comment="detection ids"),
        _jsonb("details", server_default=sa.text("'{}'::jsonb"), nullable=False),
        _timestamp("created_at", default_now=True),
        _timestamp("published_at", nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        _timestamp("acknowledged_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["class_id"], ["defect_classes.id"], name=op.f("fk_alerts_class_id_defect_classes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_alerts_dedup_key")),
        comment="Cause-linked alerts; published_at is set once the alert is on the alerts topic",
    )
    op.create_index(
        "ix_alerts_strip_id_class_id_created_at", "alerts", ["strip_id", "class_id", "created_at"]
    )
    op.create_index(
        "ix_alerts_unpublished", "alerts", ["created_at"], postgresql_where=sa.text("published_at IS NULL")
    )

    # The columns of this revision only: later revisions add fields (display_name, 0007).
    columns = {column.name for column in defect_classes.columns}
    op.bulk_insert(
        defect_classes,
        [{k: v for k, v in asdict(c).items() if k in columns} for c in load_catalogue().classes],
    )

    op.execute(DETECTIONS_WITH_CAUSE)
    op.execute(
        "COMMENT ON VIEW detections_with_cause IS"
        " 'Each detection with its strip position, class, cause and preventive action'"
    )

    op.execute(CREATE_ROLE_IF_MISSING)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ANALYST_ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(READABLE)} TO {ANALYST_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(READABLE)} FROM {ANALYST_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ANALYST_ROLE}")
    op.execute("DROP VIEW detections_with_cause")
    op.drop_index("ix_alerts_unpublished", table_name="alerts")
    op.drop_index("ix_alerts_strip_id_class_id_created_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_detections_class_id_created_at", table_name="detections")
    op.drop_table("detections")
    op.drop_index("ix_frames_strip_id_position_m", table_name="frames")
    op.drop_table("frames")
    op.drop_table("models")
    op.drop_table("defect_classes")
    op.execute(DROP_ROLE_IF_UNUSED)
