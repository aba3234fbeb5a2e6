"""worker role and reliability: least-privilege role steel_worker, alert_strip_locks, frame digests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:30:00+00:00

- `alert_strip_locks`: one row per strip whose alerts were evaluated. The alert engine inserts the
  row if missing and locks it `FOR UPDATE` to serialise evaluations of the strip. It replaces the
  advisory lock on the strip id: advisory locks need no privilege, so the read-only analysts could
  take that lock and stall every worker; row locks need UPDATE on this table, which only
  `steel_worker` has (`steel_analyst` gets nothing on it, not even SELECT).
- `frames.message_sha256`: sha256 of the frame message (its frame-meta header bytes, then its
  value), so the worker tells a redelivery (same Kafka coordinates, same content) from a frame-id
  collision. NULL for frames written before this revision. Adding a nullable column without a
  default changes only the catalogue: no table rewrite.
- `alerts.publish_error`: why the broker refused an alert permanently; `published_at` is then set
  too, so the outbox does not retry it forever.
- The role `steel_worker` (NOLOGIN; grant it to the workers' login roles with `steel-worker db
  create-login NAME --role worker`), granted in this database exactly what the worker does: USAGE
  on schema public; SELECT on alembic_version (the start-up schema check); SELECT, INSERT, UPDATE
  on defect_classes and models (catalogue upsert, model registration); SELECT, INSERT on frames and
  detections; SELECT, INSERT, UPDATE on alerts (published_at, publish_error) and alert_strip_locks;
  USAGE, SELECT on the sequences of detections.id and alerts.id. No DELETE, TRUNCATE, REFERENCES,
  TRIGGER or DDL, no views, and no role defaults (the worker sets its timeouts per connection).

`steel_analyst` keeps its table-level SELECT, which covers the two new columns.

Roles are cluster-wide: `steel_worker` is created only if missing, privileges are granted and
revoked in this database only, and the downgrade drops the role only when nothing uses it any more:
no other database grants it anything and no login role is a member of it (dropping it would
silently take the membership from the workers' logins).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_ROLE = "steel_worker"

#: relation -> privileges of `steel_worker` on it (the whole of what the worker needs).
WORKER_GRANTS: dict[str, str] = {
    "alembic_version": "SELECT",
    "defect_classes": "SELECT, INSERT, UPDATE",
    "models": "SELECT, INSERT, UPDATE",
    "frames": "SELECT, INSERT",
    "detections": "SELECT, INSERT",
    "alerts": "SELECT, INSERT, UPDATE",
    "alert_strip_locks": "SELECT, INSERT, UPDATE",
}
WORKER_SEQUENCES = ("detections_id_seq", "alerts_id_seq")

CREATE_ROLE_IF_MISSING = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{WORKER_ROLE}') THEN
        CREATE ROLE {WORKER_ROLE} NOLOGIN;
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
    IF EXISTS (
        SELECT FROM pg_catalog.pg_auth_members AS m
        JOIN pg_catalog.pg_roles AS r ON r.oid = m.roleid
        WHERE r.rolname = '{WORKER_ROLE}'
    ) THEN
        RAISE NOTICE 'role {WORKER_ROLE} kept: login roles are still members of it';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{WORKER_ROLE}') THEN
        DROP ROLE {WORKER_ROLE};
    END IF;
EXCEPTION
    -- another database on this server still grants the role privileges: keep it
    WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role {WORKER_ROLE} kept: other databases still use it';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "alert_strip_locks",
        sa.Column("strip_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("strip_id", name=op.f("pk_alert_strip_locks")),
        comment=(
            "One row per strip whose alerts were evaluated; rows are locked FOR UPDATE to serialise"
            " evaluation; the analysts' role has no privilege on it, so it cannot take these locks"
        ),
    )
    op.add_column(
        "frames",
        sa.Column(
            "message_sha256",
            sa.Text(),
            nullable=True,
            comment=(
                "sha256 hex of the frame message's frame-meta header bytes followed by its value;"
                " NULL for frames written before revision 0003"
            ),
        ),
    )
    op.add_column(
        "alerts",
        sa.Column(
            "publish_error",
            sa.Text(),
            nullable=True,
            comment=(
                "why the alert could not be put on the alerts topic, when the broker refused it"
                " permanently; published_at is then set too so it is not retried forever"
            ),
        ),
    )

    op.execute(CREATE_ROLE_IF_MISSING)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {WORKER_ROLE}")
    for relation, privileges in WORKER_GRANTS.items():
        op.execute(f"GRANT {privileges} ON {relation} TO {WORKER_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(WORKER_SEQUENCES)} TO {WORKER_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON SEQUENCE {', '.join(WORKER_SEQUENCES)} FROM {WORKER_ROLE}")
    op.execute(f"REVOKE ALL ON {', '.join(WORKER_GRANTS)} FROM {WORKER_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {WORKER_ROLE}")
    op.drop_column("alerts", "publish_error")
    op.drop_column("frames", "message_sha256")
    op.drop_table("alert_strip_locks")
    op.execute(DROP_ROLE_IF_UNUSED)
