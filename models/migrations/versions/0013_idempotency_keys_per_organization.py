"""idempotency keys per organization

A validation's Idempotency-Key was unique across the whole service, so one
organization could take the keys another was about to use (its requests then
failed with a conflict) and learn which keys another had used. Keys are now
unique within an organization: the unique constraint on the column becomes a
unique index on (organization_id, idempotency_key), partial, since most requests
have no key. Existing keys stay as they are.

Downgrading keeps, of each key used by several organizations, only the oldest
request's, and clears it on the others.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-11
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GLOBAL = "uq_validation_requests_idempotency_key"
PER_ORGANIZATION = "uq_validation_requests_organization_idempotency_key"
KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.drop_constraint(GLOBAL, type_="unique")
    op.create_index(
        PER_ORGANIZATION,
        "validation_requests",
        ["organization_id", "idempotency_key"],
        unique=True,
        postgresql_where=KEYED,
        sqlite_where=KEYED,
    )


def downgrade() -> None:
    op.drop_index(PER_ORGANIZATION, table_name="validation_requests")
    op.execute(
        "UPDATE validation_requests SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL "
        "AND EXISTS (SELECT 1 FROM validation_requests AS older "
        "WHERE older.idempotency_key = validation_requests.idempotency_key "
        "AND older.id < validation_requests.id)"
    )
    with op.batch_alter_table("validation_requests", schema=None) as batch_op:
        batch_op.create_unique_constraint(GLOBAL, ["idempotency_key"])
