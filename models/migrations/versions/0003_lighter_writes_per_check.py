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

On PostgreSQL the indexes are dropped (and, going down, built) CONCURRENTLY,
so workers keep writing requests meanwhile.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with _without_blocking_writes() as concurrently:
        op.drop_index(
            "ix_validation_requests_team_state",
            table_name="validation_requests",
            postgresql_concurrently=concurrently,
        )
        op.drop_index(
            op.f("ix_teams_organization_integration_id"),
            table_name="teams",
            postgresql_concurrently=concurrently,
        )
    if concurrently:
        op.execute("ALTER TABLE teams SET (fillfactor = 90)")


def downgrade() -> None:
    with _without_blocking_writes() as concurrently:
        if concurrently:
            op.execute("ALTER TABLE teams RESET (fillfactor)")
        op.create_index(
            op.f("ix_teams_organization_integration_id"),
            "teams",
            ["organization_integration_id"],
            postgresql_concurrently=concurrently,
        )
        op.create_index(
            "ix_validation_requests_team_state",
            "validation_requests",
            ["team_id", "state"],
            postgresql_concurrently=concurrently,
        )


@contextmanager
def _without_blocking_writes() -> Iterator[bool]:
    """On PostgreSQL, outside a transaction so that indexes are built and dropped
    CONCURRENTLY: workers keep writing requests meanwhile. Yields whether it is."""
    if op.get_context().dialect.name != "postgresql":
        yield False
        return
    with op.get_context().autocommit_block():
        yield True
