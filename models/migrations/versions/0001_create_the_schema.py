"""create the schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("account_name", sa.String(length=255), nullable=False),
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        sa.UniqueConstraint(
            "provider",
            "account_name",
            "base_url",
            name=op.f("uq_integrations_provider_account_name_base_url"),
        ),
    )
    op.create_table(
        "validation_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("integration_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.String(length=300), nullable=False),
        sa.Column(
            "requested_by",
            sa.Enum("cli", "api", "beat", name="requester", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "running",
                "done",
                "failed",
                name="requeststate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "outcome",
            sa.Enum(
                "valid",
                "invalid_key",
                "key_lacks_access",
                "rejected",
                "invalid_integration",
                "invalid_team",
                "error",
                name="outcome",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_requests")),
    )
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_validation_requests_state_created", ["state", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_validation_requests_team_state", ["team_id", "state"], unique=False
        )

    op.create_table(
        "organization_integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "disabled", name="integrationstatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_organization_integrations_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_integrations")),
        sa.UniqueConstraint(
            "organization_id",
            "integration_id",
            name=op.f("uq_organization_integrations_organization_id_integration_id"),
        ),
    )
    with op.batch_alter_table("organization_integrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_organization_integrations_organization_id"),
            ["organization_id"],
            unique=False,
        )

    op.create_table(
        "teams",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("organization_integration_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("encrypted_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "unknown",
                "valid",
                "invalid_key",
                "key_lacks_access",
                "rejected",
                name="teamstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_code", sa.String(length=64), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_integration_id"],
            ["organization_integrations.id"],
            name=op.f("fk_teams_organization_integration_id_organization_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint(
            "organization_integration_id",
            "label",
            name=op.f("uq_teams_organization_integration_id_label"),
        ),
    )
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_teams_organization_integration_id"),
            ["organization_integration_id"],
            unique=False,
        )

    op.create_table(
        "team_status_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column(
            "old_status",
            sa.Enum(
                "unknown",
                "valid",
                "invalid_key",
                "key_lacks_access",
                "rejected",
                name="teamstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "new_status",
            sa.Enum(
                "unknown",
                "valid",
                "invalid_key",
                "key_lacks_access",
                "rejected",
                name="teamstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_team_status_changes_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_status_changes")),
        sa.UniqueConstraint("request_id", name=op.f("uq_team_status_changes_request_id")),
    )
    with op.batch_alter_table("team_status_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_team_status_changes_team_id"), ["team_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("team_status_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_team_status_changes_team_id"))

    op.drop_table("team_status_changes")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teams_organization_integration_id"))

    op.drop_table("teams")
    with op.batch_alter_table("organization_integrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organization_integrations_organization_id"))

    op.drop_table("organization_integrations")
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_validation_requests_team_state")
        batch_op.drop_index("ix_validation_requests_state_created")

    op.drop_table("validation_requests")
    op.drop_table("integrations")
