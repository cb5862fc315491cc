"""an integration per organization

An account name is typed by a user and proves nothing (SPEC §2, §8), so an
integration row now belongs to one organization: `integrations.organization_id`,
and the unique constraint becomes (organization_id, provider, account_name,
base_url). Its probe, platform, pacing, readiness and moves are that organization's.

Every integration linked to several organizations is split: the first link (the
lowest id) keeps the row; each other organization gets a copy (same account, base
URL, platform, probe, migration and switch-off days, creation time, and a copy of the
row's move history), its
organization integration is repointed to the copy, and so are its validation
requests. Teams are untouched: their ids (`<organization_integration_id>-<label>`),
keys, statuses, history and held changes stay as they were. An integration no
organization is linked to keeps organization id 0.

On SQLite the table is rebuilt to change its constraint, with foreign keys off for
that moment: dropping the old table with them on would cascade to every team.

Downgrade merges the copies back into the oldest row of each account and base URL
(their probes are the oldest row's again).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_UNIQUE = "uq_integrations_provider_account_name_base_url"
NEW_UNIQUE = "uq_integrations_organization_id_provider_account_name_base_url"
INDEX = "ix_integrations_organization_id"
UNLINKED = 0
"""The organization id of an integration no organization is linked to."""

_integrations = sa.table(
    "integrations",
    sa.column("id", sa.Integer),
    sa.column("organization_id", sa.BigInteger),
    sa.column("provider", sa.String),
    sa.column("account_name", sa.String),
    sa.column("base_url", sa.String),
    sa.column("platform", sa.String),
    sa.column("probe", sa.String),
    sa.column("migrated_on", sa.Date),
    sa.column("switched_off_on", sa.Date),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_links = sa.table(
    "organization_integrations",
    sa.column("id", sa.Integer),
    sa.column("organization_id", sa.BigInteger),
    sa.column("integration_id", sa.Integer),
)
_moves = sa.table(
    "integration_moves",
    sa.column("id", sa.Integer),
    sa.column("integration_id", sa.Integer),
    sa.column("from_platform", sa.String),
    sa.column("to_platform", sa.String),
    sa.column("from_base_url", sa.String),
    sa.column("to_base_url", sa.String),
    sa.column("teams", sa.Integer),
    sa.column("teams_ready", sa.Integer),
    sa.column("forced", sa.Boolean),
    sa.column("moved_at", sa.DateTime(timezone=True)),
)
_requests = sa.table(
    "validation_requests",
    sa.column("organization_id", sa.BigInteger),
    sa.column("integration_id", sa.BigInteger),
)
_MOVE_COLUMNS = [c.name for c in _moves.columns if c.name not in ("id", "integration_id")]
_ROW_COLUMNS = [
    "provider",
    "account_name",
    "base_url",
    "platform",
    "probe",
    "migrated_on",
    "switched_off_on",
    "created_at",
]


def upgrade() -> None:
    with _foreign_keys_off(), op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organization_id", sa.BigInteger(), nullable=True))
        batch_op.drop_constraint(OLD_UNIQUE, type_="unique")
    _split_shared_integrations(op.get_bind())
    with _foreign_keys_off(), op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.alter_column("organization_id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint(
            NEW_UNIQUE, ["organization_id", "provider", "account_name", "base_url"]
        )
        batch_op.create_index(INDEX, ["organization_id"], unique=False)


def downgrade() -> None:
    with _foreign_keys_off(), op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.drop_constraint(NEW_UNIQUE, type_="unique")
    _merge_copies(op.get_bind())
    with _foreign_keys_off(), op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.create_unique_constraint(OLD_UNIQUE, ["provider", "account_name", "base_url"])
        batch_op.drop_column("organization_id")


def _split_shared_integrations(bind: sa.Connection) -> None:
    """Give each organization linked to an integration a row of its own."""
    if bind.dialect.name == "postgresql":
        # The copies take ids from the sequence: past every id in use, even rows
        # inserted with an id of their own.
        bind.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('integrations', 'id'), "
                "(SELECT coalesce(max(id), 0) + 1 FROM integrations), false)"
            )
        )
    links: dict[int, list[tuple[int, int]]] = {}
    for link_id, organization_id, integration_id in bind.execute(
        sa.select(_links.c.id, _links.c.organization_id, _links.c.integration_id).order_by(
            _links.c.id
        )
    ):
        links.setdefault(integration_id, []).append((link_id, organization_id))
    rows = {row.id: row for row in bind.execute(sa.select(_integrations))}
    for integration_id, row in rows.items():
        linked = links.get(integration_id, [])
        owner = linked[0][1] if linked else UNLINKED
        bind.execute(
            _integrations.update()
            .where(_integrations.c.id == integration_id)
            .values(organization_id=owner)
        )
        moves = bind.execute(
            sa.select(*(_moves.c[name] for name in _MOVE_COLUMNS)).where(
                _moves.c.integration_id == integration_id
            )
        ).all()
        copied: dict[int, int] = {owner: integration_id}
        for link_id, organization_id in linked[1:]:
            if organization_id not in copied:
                copied[organization_id] = _copy(bind, row, organization_id, moves)
            copy_id = copied[organization_id]
            bind.execute(
                _links.update().where(_links.c.id == link_id).values(integration_id=copy_id)
            )
            bind.execute(
                _requests.update()
                .where(
                    _requests.c.organization_id == organization_id,
                    _requests.c.integration_id == integration_id,
                )
                .values(integration_id=copy_id)
            )


def _copy(
    bind: sa.Connection,
    row: sa.Row[tuple[object, ...]],
    organization_id: int,
    moves: Sequence[sa.Row[tuple[object, ...]]],
) -> int:
    """A copy of integration `row` for `organization_id`, with its move history."""
    values = {name: getattr(row, name) for name in _ROW_COLUMNS}
    copy_id = bind.execute(
        _integrations.insert()
        .values(**values, organization_id=organization_id)
        .returning(_integrations.c.id)
    ).scalar_one()
    if moves:
        bind.execute(
            _moves.insert(),
            [dict(move._mapping, integration_id=copy_id) for move in moves],
        )
    return int(copy_id)


def _merge_copies(bind: sa.Connection) -> None:
    """Point every link at the oldest row of its account and base URL; drop the rest."""
    oldest: dict[tuple[str, str, str], int] = {}
    for row in bind.execute(sa.select(_integrations).order_by(_integrations.c.id)):
        key = (row.provider, row.account_name, row.base_url)
        kept = oldest.setdefault(key, row.id)
        if kept == row.id:
            continue
        bind.execute(
            _links.update().where(_links.c.integration_id == row.id).values(integration_id=kept)
        )
        bind.execute(
            _requests.update()
            .where(_requests.c.integration_id == row.id)
            .values(integration_id=kept)
        )
        bind.execute(_moves.delete().where(_moves.c.integration_id == row.id))
        bind.execute(_integrations.delete().where(_integrations.c.id == row.id))


@contextmanager
def _foreign_keys_off() -> Iterator[None]:
    """On SQLite, outside the transaction and with foreign keys off: the table is
    rebuilt, and dropping the old one with them on would delete every link and team."""
    if op.get_context().dialect.name != "sqlite":
        yield
        return
    with op.get_context().autocommit_block():
        op.execute("PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            op.execute("PRAGMA foreign_keys=ON")
