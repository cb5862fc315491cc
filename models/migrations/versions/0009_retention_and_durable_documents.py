"""retention of requests, durable base-URL documents, honest attempt counts

`validation_requests` gains two partial indexes over its finished rows: by
(finished_at, id), so that each page of the retention's pruning is a range scan,
and by team then finished_at, so that a team's latest finished request is found
(and kept) by one index probe. `held_changes.request_id` is indexed for the same
reason. `retention_marks` keeps where the pruning's walk stands.

`first_check_attempts` keeps the first check's share of `attempts` once a
confirmation's second check is due: `attempts` now counts both checks' calls.

`base_url_events` keeps the webhook documents of base URLs that turned
unavailable or recovered, and of guard trips, until they are delivered.

On PostgreSQL the indexes of `validation_requests` are built CONCURRENTLY, so
producers and workers keep writing meanwhile.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = "finished_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_check_attempts", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_held_changes_request_id"), "held_changes", ["request_id"])
    op.create_table(
        "retention_marks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("cursor_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor_id", sa.Uuid(), nullable=True),
        sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_marks")),
    )
    op.create_table(
        "base_url_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notify_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_base_url_events")),
        sa.UniqueConstraint("key", name=op.f("uq_base_url_events_key")),
    )
    op.create_index(op.f("ix_base_url_events_created_at"), "base_url_events", ["created_at"])
    with _without_blocking_writes() as concurrently:
        op.create_index(
            "ix_validation_requests_finished",
            "validation_requests",
            ["finished_at", "id"],
            postgresql_where=sa.text(FINISHED),
            sqlite_where=sa.text(FINISHED),
            postgresql_concurrently=concurrently,
        )
        op.create_index(
            "ix_validation_requests_team_finished",
            "validation_requests",
            ["organization_id", "integration_id", "team_id", "finished_at"],
            postgresql_where=sa.text(FINISHED),
            sqlite_where=sa.text(FINISHED),
            postgresql_concurrently=concurrently,
        )


def downgrade() -> None:
    with _without_blocking_writes() as concurrently:
        for name in ("ix_validation_requests_team_finished", "ix_validation_requests_finished"):
            op.drop_index(
                name, table_name="validation_requests", postgresql_concurrently=concurrently
            )
    op.drop_index(op.f("ix_base_url_events_created_at"), table_name="base_url_events")
    op.drop_table("base_url_events")
    op.drop_table("retention_marks")
    op.drop_index(op.f("ix_held_changes_request_id"), table_name="held_changes")
    # Before 0009 a second check counted its own attempts only, from 0.
    op.execute(
        "UPDATE validation_requests SET attempts = attempts - first_check_attempts "
        "WHERE state = 'confirming' AND first_check_attempts IS NOT NULL"
    )
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.drop_column("first_check_attempts")


@contextmanager
def _without_blocking_writes() -> Iterator[bool]:
    """On PostgreSQL, outside a transaction so that the index is built and dropped
    CONCURRENTLY. Yields whether it is."""
    if op.get_context().dialect.name != "postgresql":
        yield False
        return
    with op.get_context().autocommit_block():
        yield True
