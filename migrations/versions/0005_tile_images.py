"""tile images: the evidence crop behind each detection, partitioned by month

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 18:30:00+00:00

- `tile_images`: one row per tile with at least one detection (and per sampled clean tile,
  `sampled`), holding the crop as the model saw it (JPEG by default), written by the worker in the
  transaction that writes the frame's ledger row and detections. Keyed by (frame_id, tile_index,
  created_at): a partitioned table's keys must hold its partition key; the ledger makes a frame's
  crops be written once.
- Partitioned by RANGE (created_at), one partition per month, so retention drops whole months
  (`steel-worker db prune`). This revision creates the default partition `tile_images_default`,
  which takes any row no month partition holds (nothing is ever refused for want of one);
  `steel-worker db upgrade` and `steel-worker db partitions` create the month partitions ahead and
  move what the default one holds of those months into them.
- `steel_worker` may SELECT and INSERT (through the parent table: partitions need no grant of
  their own); `steel_analyst` may SELECT.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "steel_analyst"
WORKER_ROLE = "steel_worker"


def upgrade() -> None:
    op.create_table(
        "tile_images",
        sa.Column("frame_id", sa.Text(), nullable=False),
        sa.Column("tile_index", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when the crop was stored: the partition key",
        ),
        sa.Column("x", sa.Integer(), nullable=False, comment="tile window in frame pixels"),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False, comment="of the stored image, pixels"),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sampled", sa.Boolean(), nullable=False, comment="a clean tile kept for quality control"),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "width > 0 AND height > 0 AND size > 0 AND octet_length(image) > 0",
            name=op.f("ck_tile_images_image_not_empty"),
        ),
        sa.ForeignKeyConstraint(
            ["frame_id"],
            ["frames.frame_id"],
            name=op.f("fk_tile_images_frame_id_frames"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("frame_id", "tile_index", "created_at", name=op.f("pk_tile_images")),
        comment=(
            "The crop of each tile with a detection (and of a sample of clean tiles) as the model saw it,"
            " stored with the frame's detections; partitioned by month of created_at"
        ),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.execute("CREATE TABLE tile_images_default PARTITION OF tile_images DEFAULT")
    op.execute(f"GRANT SELECT, INSERT ON tile_images TO {WORKER_ROLE}")
    op.execute(f"GRANT SELECT ON tile_images TO {ANALYST_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON tile_images FROM {WORKER_ROLE}")
    op.execute(f"REVOKE ALL ON tile_images FROM {ANALYST_ROLE}")
    op.drop_table("tile_images")  # its partitions go with it
