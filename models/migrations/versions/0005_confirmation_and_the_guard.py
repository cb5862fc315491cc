"""confirmation and the mass-change guard

A request gains the `confirming` state: a valid team's key got a failing verdict,
and a second check must agree before the team changes. The request keeps that
first verdict (`confirming_outcome`) and, once the second check answered, whether
it `confirmed` or `disagreed` (`confirmation`).

A confirming request is open like a pending or running one, so the coalescing
index now covers it: it is built under a new name before the old one is dropped
(on PostgreSQL CONCURRENTLY, so producers keep inserting meanwhile).

Two tables: `held_changes` (a confirmed change the guard held back, with its
evidence) and `guard_windows` (the guard's window per base URL, where the workers
share no Redis).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "state IN ('pending', 'running', 'confirming')"
OPEN_BEFORE = "state IN ('pending', 'running')"
TEAM_COLUMNS = ["organization_id", "integration_id", "team_id"]


def upgrade() -> None:
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirming_outcome", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("confirmation", sa.String(length=16), nullable=True))
    op.create_table(
        "held_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("old_status", sa.String(length=32), nullable=False),
        sa.Column("new_status", sa.String(length=32), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rechecked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_held_changes_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_changes")),
        sa.UniqueConstraint("team_id", name=op.f("uq_held_changes_team_id")),
    )
    op.create_index(op.f("ix_held_changes_base_url"), "held_changes", ["base_url"])
    op.create_table(
        "guard_windows",
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("buckets", sa.Text(), nullable=False),
        sa.Column("tripped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trips", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("base_url", name=op.f("pk_guard_windows")),
    )
    with _without_blocking_writes() as concurrently:
        op.create_index(
            "uq_validation_requests_open_team",
            "validation_requests",
            TEAM_COLUMNS,
            unique=True,
            postgresql_where=sa.text(OPEN),
            sqlite_where=sa.text(OPEN),
            postgresql_concurrently=concurrently,
        )
        op.drop_index(
            "uq_validation_requests_active_team",
            table_name="validation_requests",
            postgresql_concurrently=concurrently,
        )


def downgrade() -> None:
    # A confirming request goes back to pending: its second check runs as a first.
    op.execute("UPDATE validation_requests SET state = 'pending' WHERE state = 'confirming'")
    with _without_blocking_writes() as concurrently:
        op.create_index(
            "uq_validation_requests_active_team",
            "validation_requests",
            TEAM_COLUMNS,
            unique=True,
            postgresql_where=sa.text(OPEN_BEFORE),
            sqlite_where=sa.text(OPEN_BEFORE),
            postgresql_concurrently=concurrently,
        )
        op.drop_index(
            "uq_validation_requests_open_team",
            table_name="validation_requests",
            postgresql_concurrently=concurrently,
        )
    op.drop_table("guard_windows")
    op.drop_index(op.f("ix_held_changes_base_url"), table_name="held_changes")
    op.drop_table("held_changes")
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.drop_column("confirmation")
        batch_op.drop_column("confirming_outcome")


@contextmanager
def _without_blocking_writes() -> Iterator[bool]:
    """On PostgreSQL, outside a transaction so that the index is built and dropped
    CONCURRENTLY. Yields whether it is."""
    if op.get_context().dialect.name != "postgresql":
        yield False
        return
    with op.get_context().autocommit_block():
        yield True
