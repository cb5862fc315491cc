"""integrations and teams through the API

Teams can now be removed, and their status history outlives them until
`OGV_HISTORY_RETENTION_DAYS` prunes it: `team_status_changes.team_id` loses its
foreign key (and with it the cascade that deleted the history with the team).

Creates through the API take an Idempotency-Key: `idempotent_creates` keeps each
organization's keys and what each created.

Downgrading deletes the history of teams removed meanwhile, since the foreign key
it restores would refuse it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HISTORY_FK = "fk_team_status_changes_team_id_teams"


def upgrade() -> None:
    with op.batch_alter_table("team_status_changes", schema=None) as batch_op:
        batch_op.drop_constraint(HISTORY_FK, type_="foreignkey")
    op.create_table(
        "idempotent_creates",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=316), nullable=True),
        sa.Column("request_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "organization_id", "idempotency_key", name=op.f("pk_idempotent_creates")
        ),
    )


def downgrade() -> None:
    op.drop_table("idempotent_creates")
    op.execute("DELETE FROM team_status_changes WHERE team_id NOT IN (SELECT id FROM teams)")
    with op.batch_alter_table("team_status_changes", schema=None) as batch_op:
        batch_op.create_foreign_key(HISTORY_FK, "teams", ["team_id"], ["id"], ondelete="CASCADE")
