"""indexes for the operators' console

The console counts teams by status per organization and per platform, and
status changes per day over the last 30 days. Two indexes keep those reads
bounded at a million teams: `teams (organization_integration_id, status)`, which
GROUP BY reads in order without touching the table, and
`team_status_changes (changed_at)`, which reads only the days shown. No row
changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_teams_link_status", "teams", ["organization_integration_id", "status"])
    op.create_index(
        op.f("ix_team_status_changes_changed_at"), "team_status_changes", ["changed_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_team_status_changes_changed_at"), table_name="team_status_changes")
    op.drop_index("ix_teams_link_status", table_name="teams")
