"""outbox runs and health checks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "health_checks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_checks")),
    )
    op.create_table(
        "validation_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "requested_by",
            sa.Enum("cli", "api", "beat", name="requester", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("organization_id", sa.BigInteger(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_runs")),
    )
    with op.batch_alter_table("team_status_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("notify_attempts", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("run_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("batch_id", sa.Uuid(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_validation_requests_batch_id"), ["batch_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_validation_requests_run_id"), ["run_id"], unique=False)
        batch_op.create_index(
            "uq_validation_requests_active_team",
            ["organization_id", "integration_id", "team_id"],
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'running')"),
            sqlite_where=sa.text("state IN ('pending', 'running')"),
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_validation_requests_idempotency_key"), ["idempotency_key"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_validation_requests_run_id_validation_runs"),
            "validation_runs",
            ["run_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_validation_requests_run_id_validation_runs"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("uq_validation_requests_idempotency_key"), type_="unique"
        )
        batch_op.drop_index(
            "uq_validation_requests_active_team",
            postgresql_where=sa.text("state IN ('pending', 'running')"),
            sqlite_where=sa.text("state IN ('pending', 'running')"),
        )
        batch_op.drop_index(batch_op.f("ix_validation_requests_run_id"))
        batch_op.drop_index(batch_op.f("ix_validation_requests_batch_id"))
        batch_op.drop_column("batch_id")
        batch_op.drop_column("run_id")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("published_at")

    with op.batch_alter_table("team_status_changes", schema=None) as batch_op:
        batch_op.drop_column("notify_attempts")
        batch_op.drop_column("notified_at")

    op.drop_table("validation_runs")
    op.drop_table("health_checks")
