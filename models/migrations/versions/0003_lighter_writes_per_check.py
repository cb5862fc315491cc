"""lighter writes per check

Every check inserts a request, updates it twice and updates its team. This
revision takes away index work those writes did for nothing:

- `ix_validation_requests_team_state` answered no query (the active check of a
  team is found through `uq_validation_requests_active_team`), yet every insert
  and every state change of a request added an entry to it;
- `ix_teams_organization_integration_id` repeated the leading column of
  `uq_teams_organization_integration_id_label`, which serves the same look-ups;
- on PostgreSQL, team pages are filled to 90%: a check rewrites only columns no
  index covers, and with room on its page the new row version stays there
  (a HOT update) without new index entries. Pages written before this revision
  stay full until the table is rewritten (`VACUUM FULL teams`, say).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_validation_requests_team_state", table_name="validation_requests")
    op.drop_index(op.f("ix_teams_organization_integration_id"), table_name="teams")
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE teams SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE teams RESET (fillfactor)")
    op.create_index(
        op.f("ix_teams_organization_integration_id"), "teams", ["organization_integration_id"]
    )
    op.create_index(
        "ix_validation_requests_team_state", "validation_requests", ["team_id", "state"]
    )
