"""the running APIs and the encryption keys they hold

One row per running `ogv api`, refreshed while it runs: `ogv keys rotate` refuses
while one of them lacks the new key (the workers answer a broadcast instead).
Nothing to keep on the way down: the rows describe processes, not data.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_processes",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("fingerprints", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_api_processes")),
    )


def downgrade() -> None:
    op.drop_table("api_processes")
