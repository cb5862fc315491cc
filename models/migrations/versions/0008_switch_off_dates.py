"""switch-off dates per account, and the sunset's notices

An integration (one account) may record the day it migrated to JSM Operations
(`migrated_on`) and the day its Opsgenie was switched off (`switched_off_on`):
its deadline is the earliest of Opsgenie's end of support, the migration plus
120 days, and the switch-off. Both are nullable: existing rows keep the common
deadline.

`sunset_notices` records each announcement of a deadline coming within 30, 7
and 1 days, once per integration, deadline and threshold, and its delivery.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("migrated_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("switched_off_on", sa.Date(), nullable=True))
    op.create_table(
        "sunset_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("days_left", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notify_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_sunset_notices_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sunset_notices")),
        sa.UniqueConstraint(
            "integration_id",
            "deadline",
            "threshold",
            name=op.f("uq_sunset_notices_integration_id_deadline_threshold"),
        ),
    )
    op.create_index(op.f("ix_sunset_notices_integration_id"), "sunset_notices", ["integration_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sunset_notices_integration_id"), table_name="sunset_notices")
    op.drop_table("sunset_notices")
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_column("switched_off_on")
        batch_op.drop_column("migrated_on")
