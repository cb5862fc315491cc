"""platforms and the Opsgenie sunset

Integrations gain a platform (`opsgenie`, `opsgenie-eu`, `jsm-ops`), filled in
from their base URL, and a probe of their own (NULL: the platform's default).
Teams and requests gain what the sunset work records: where else a key works,
whether it works on JSM Operations, and the rate-limit headers of a 429. Two
tables: `integration_moves` (the history of `ogv integration migrate`) and
`platform_health` (the window that decides a base URL answers like its platform).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The platform of an existing integration, by the host its base URL names. Rows
# on another (allowlisted) host, a proxy say, were Opsgenie US integrations.
PLATFORM_OF_BASE_URL = """
    CASE
        WHEN base_url LIKE 'https://api.eu.opsgenie.com/%' THEN 'opsgenie-eu'
        WHEN base_url LIKE 'https://api.atlassian.com/jsm/ops/integration/%' THEN 'jsm-ops'
        ELSE 'opsgenie'
    END
"""


def upgrade() -> None:
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("platform", sa.String(length=32), server_default="opsgenie", nullable=False)
        )
        batch_op.add_column(sa.Column("probe", sa.String(length=32), nullable=True))
    op.execute(f"UPDATE integrations SET platform = {PLATFORM_OF_BASE_URL}")

    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("works_on", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("jsm_ops", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("jsm_ops_checked_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("works_on", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("rate_limit_state", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("rate_limit_reason", sa.String(length=32), nullable=True))

    op.create_table(
        "integration_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("from_platform", sa.String(length=32), nullable=False),
        sa.Column("to_platform", sa.String(length=32), nullable=False),
        sa.Column("from_base_url", sa.String(length=255), nullable=False),
        sa.Column("to_base_url", sa.String(length=255), nullable=False),
        sa.Column("teams", sa.Integer(), nullable=False),
        sa.Column("teams_ready", sa.Integer(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_moves_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_moves")),
    )
    op.create_index(
        op.f("ix_integration_moves_integration_id"),
        "integration_moves",
        ["integration_id"],
        unique=False,
    )
    op.create_table(
        "platform_health",
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.Column("unrecognised", sa.Integer(), nullable=False),
        sa.Column("unavailable_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("base_url", name=op.f("pk_platform_health")),
    )


def downgrade() -> None:
    op.drop_table("platform_health")
    op.drop_index(op.f("ix_integration_moves_integration_id"), table_name="integration_moves")
    op.drop_table("integration_moves")
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.drop_column("rate_limit_reason")
        batch_op.drop_column("rate_limit_state")
        batch_op.drop_column("works_on")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("jsm_ops_checked_at")
        batch_op.drop_column("jsm_ops")
        batch_op.drop_column("works_on")
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_column("probe")
        batch_op.drop_column("platform")
