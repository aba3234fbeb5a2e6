"""console: its users, the reviews of evidence crops, and the console's role

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 19:00:00+00:00

- `console_users`: who may log in to `steel-worker console`, with a role — viewer (reads),
  reviewer (+ reviews crops), maintenance (+ acknowledges alerts), admin (all of it) — and an
  Argon2id password hash (never the password). `disabled_at` locks a user out without losing the
  name their reviews and acknowledgements carry.
- `reviews`: a person's verdict on one crop — `confirm` (the model's classes are right), `reject`
  (nothing is there), or `correct` (the classes are `labels`) — with who, when and the model
  version that made the detections. A crop may be reviewed again: the newest review counts; the
  others stay as history. `published_at`: when it went out on the optional reviews topic (an
  outbox, like the alerts'). The ML engineer's `steel-worker dataset --format reviews` turns them
  into a tile set.
- The role `steel_console` (NOLOGIN, like `steel_worker`; `steel-worker db create-login NAME --role
  console`), a member of `steel_analyst`, so that read-only pages run as the analysts' read-only
  role (`SET LOCAL ROLE steel_analyst`). It may also: SELECT, INSERT, UPDATE on console_users;
  SELECT, INSERT and UPDATE (published_at) on reviews; UPDATE of alerts.acknowledged_by and
  alerts.acknowledged_at only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "steel_analyst"
CONSOLE_ROLE = "steel_console"

CREATE_ROLE_IF_MISSING = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{CONSOLE_ROLE}') THEN
        CREATE ROLE {CONSOLE_ROLE} NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$
"""

DROP_ROLE_IF_UNUSED = f"""
DO $$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_auth_members AS m
        JOIN pg_catalog.pg_roles AS r ON r.oid = m.roleid
        WHERE r.rolname = '{CONSOLE_ROLE}'
    ) THEN
        RAISE NOTICE 'role {CONSOLE_ROLE} kept: login roles are still members of it';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{CONSOLE_ROLE}') THEN
        DROP ROLE {CONSOLE_ROLE};
    END IF;
EXCEPTION
    WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role {CONSOLE_ROLE} kept: other databases still use it';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False, comment="Argon2id; never the password"),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("disabled_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'reviewer', 'maintenance', 'admin')", name=op.f("ck_console_users_known_role")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_console_users")),
        comment="Who may log in to the console, and as what",
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("frame_id", sa.Text(), nullable=False),
        sa.Column("tile_index", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column(
            "labels",
            ARRAY(sa.Text()),
            nullable=False,
            comment="the classes on the crop, as the reviewer says",
        ),
        sa.Column("model_version", sa.Text(), nullable=False, comment="the model that made the detections"),
        sa.Column("reviewer", sa.Text(), nullable=False),
        sa.Column(
            "reviewed_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column(
            "published_at",
            sa.TIMESTAMP(timezone=True),
            nullable=True,
            comment="when the review went out on the reviews topic (NULL: not yet, or no topic)",
        ),
        sa.CheckConstraint(
            "verdict IN ('confirm', 'reject', 'correct')", name=op.f("ck_reviews_known_verdict")
        ),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.frame_id"], name=op.f("fk_reviews_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        comment="People's verdicts on evidence crops; the newest per crop counts",
    )
    op.create_index(
        op.f("ix_reviews_frame_id_tile_index_reviewed_at"),
        "reviews",
        ["frame_id", "tile_index", "reviewed_at"],
    )
    op.create_index(
        "ix_reviews_unpublished", "reviews", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    # the analysts read the reviews, not console_users: password hashes are no one's business
    op.execute(f"GRANT SELECT ON reviews TO {ANALYST_ROLE}")
    op.execute(CREATE_ROLE_IF_MISSING)
    op.execute(f"GRANT {ANALYST_ROLE} TO {CONSOLE_ROLE}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {CONSOLE_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON console_users TO {CONSOLE_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE (published_at) ON reviews TO {CONSOLE_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE reviews_id_seq TO {CONSOLE_ROLE}")
    op.execute(f"GRANT UPDATE (acknowledged_by, acknowledged_at) ON alerts TO {CONSOLE_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON console_users, reviews FROM {CONSOLE_ROLE}, {ANALYST_ROLE}")
    op.execute(f"REVOKE ALL ON SEQUENCE reviews_id_seq FROM {CONSOLE_ROLE}")
    op.execute(f"REVOKE UPDATE (acknowledged_by, acknowledged_at) ON alerts FROM {CONSOLE_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {CONSOLE_ROLE}")
    op.execute(f"REVOKE {ANALYST_ROLE} FROM {CONSOLE_ROLE}")
    op.drop_index("ix_reviews_unpublished", table_name="reviews")
    op.drop_index(op.f("ix_reviews_frame_id_tile_index_reviewed_at"), table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("console_users")
    op.execute(DROP_ROLE_IF_UNUSED)
