"""console hardening: server-side sessions, and the console may read the schema revision

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 23:30:00+00:00

- `console_sessions`: one row per logged-in browser. The session cookie holds a random token; the
  row holds only its sha256 (`token_sha256`), so whoever reads the table cannot log in with it. A
  session ends when its row is gone: at logout (that row), when the user's password or role is set
  again or the user is disabled (every row of the user), and at `expires_at`. A copied cookie is
  refused from then on, which a signed cookie alone could not do. Rows go with their user
  (ON DELETE CASCADE).
- `steel_console` may SELECT, INSERT and DELETE on console_sessions (no UPDATE: a session is never
  extended or moved to another user), and SELECT on alembic_version: `steel-worker console serve`
  checks the schema revision at start-up, as the worker does, and could not as a least-privilege
  login before. The analysts get nothing on console_sessions.

The downgrade revokes both and drops the table: every session ends, and consoles of revision 0007
use their signed cookies again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSOLE_ROLE = "steel_console"


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column(
            "token_sha256",
            sa.Text(),
            nullable=False,
            comment="sha256 hex of the session cookie's token; never the token",
        ),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_name"],
            ["console_users.name"],
            name=op.f("fk_console_sessions_user_name_console_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_console_sessions")),
        comment=(
            "Logged-in console sessions, one per browser: logout, a new password or role, or"
            " disabling the user deletes them"
        ),
    )
    op.create_index(op.f("ix_console_sessions_user_name"), "console_sessions", ["user_name"])
    op.execute(f"GRANT SELECT, INSERT, DELETE ON console_sessions TO {CONSOLE_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {CONSOLE_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE SELECT ON alembic_version FROM {CONSOLE_ROLE}")
    op.execute(f"REVOKE ALL ON console_sessions FROM {CONSOLE_ROLE}")
    op.drop_index(op.f("ix_console_sessions_user_name"), table_name="console_sessions")
    op.drop_table("console_sessions")
