"""Opsgenie accounts, the organizations linked to them, and their teams (SPEC §2)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, IntegrationStatus, TeamStatus, enum_column, utcnow

LABEL_MAX = 255
ACCOUNT_MAX = 255
BASE_URL_MAX = 255
BIGINT_MAX = 2**63 - 1
"""The largest organization id (a BIGINT column)."""
INTEGER_MAX = 2**31 - 1
"""The largest integration or organization integration id (an INTEGER column)."""
TEAM_ID_MAX = 300
"""The longest team id: `teams.id` is a String(300)."""

OPSGENIE_PROVIDER = "opsgenie"
"""`Integration.provider` of every account this service checks."""

JSM_WORKS, JSM_FAILS, JSM_UNKNOWN = "works", "fails", "unknown"
"""What `Team.jsm_ops` records: a genuine valid, another genuine verdict, no verdict."""

# `<organization_integration_id>-<label>` (`Team.make_id`). The id is an Integer
# column, so at most 10 digits. A label holds no control character (C0 or C1), line
# separator or lone surrogate, and no space at either end. Refusing the rest keeps a
# key pasted into `team_id` (a UUID) out of the database and out of every answer,
# unless the key's first group happens to be all digits.
_LABEL_CHAR = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]"
_LABEL_EDGE = r"[^\x00-\x20\x7f-\x9f\u2028\u2029\ud800-\udfff]"
_LABEL = rf"{_LABEL_EDGE}(?:{_LABEL_CHAR}*{_LABEL_EDGE})?"
TEAM_ID_PATTERN = rf"^[1-9][0-9]{{0,9}}-{_LABEL}$"
"""The shape of every team id the service accepts from outside."""
LABEL_PATTERN = rf"^{_LABEL}$"
"""The shape of a label, as a team id holds it (a new label must also be printable:
`worker.inventory.check_label`)."""


class Integration(Base):
    """One organization's installation of an Opsgenie account.

    An account name is typed by a user and proves nothing (SPEC §8): two
    organizations naming the same account each have a row of their own, so nothing
    one sets (its probe, its platform, a move) and nothing keyed by the row (pacing,
    readiness) reaches the other. `platform` names where the account lives
    (`worker.platforms`: `opsgenie`, `opsgenie-eu`, `jsm-ops`), `probe` the probe its
    checks use; None follows the platform's default (`OGV_PROBE` on Opsgenie).
    `migrated_on` and `switched_off_on` are the days (UTC) the account migrated to JSM
    Operations and its Opsgenie was switched off, as an operator recorded them: they
    bring the account's deadline forward (`worker.platforms.sunset`).
    """

    __tablename__ = "integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigInteger, index=True)
    provider: Mapped[str] = mapped_column(String(32), default=OPSGENIE_PROVIDER)
    account_name: Mapped[str] = mapped_column(String(ACCOUNT_MAX))
    base_url: Mapped[str] = mapped_column(String(BASE_URL_MAX))
    platform: Mapped[str] = mapped_column(String(32), server_default="opsgenie")
    probe: Mapped[str | None] = mapped_column(String(32))
    migrated_on: Mapped[date | None] = mapped_column(Date)
    switched_off_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("organization_id", "provider", "account_name", "base_url"),)


class OrganizationIntegration(Base):
    """The link between one customer organization and its integration (the row of
    that organization's own: `organization_id` is the integration's too)."""

    __tablename__ = "organization_integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigInteger, index=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    status: Mapped[IntegrationStatus] = mapped_column(
        enum_column(IntegrationStatus), default=IntegrationStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    integration: Mapped[Integration] = relationship(lazy="raise")

    __table_args__ = (UniqueConstraint("organization_id", "integration_id"),)


class Team(Base):
    """A labelled integration key of one organization integration.

    `encrypted_key` is a Fernet token; nothing else in the database holds the key.
    `key_version` grows whenever the key is replaced or its integration moves to
    another platform, so a check of the old key (or host) cannot overwrite what is
    known about the new one. `works_on` lists the other platforms where a key that
    turned invalid works (comma-separated), and `jsm_ops` whether the key works on
    JSM Operations (`works`, `fails`, `unknown`), as last probed.
    """

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(TEAM_ID_MAX), primary_key=True)
    organization_integration_id: Mapped[int] = mapped_column(
        ForeignKey("organization_integrations.id", ondelete="CASCADE")
    )
    label: Mapped[str] = mapped_column(String(LABEL_MAX))
    encrypted_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus), default=TeamStatus.UNKNOWN)
    status_changed_at: Mapped[datetime | None]
    last_checked_at: Mapped[datetime | None]
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_http_status: Mapped[int | None]
    works_on: Mapped[str | None] = mapped_column(String(100))
    jsm_ops: Mapped[str | None] = mapped_column(String(16))
    jsm_ops_checked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organization_integration: Mapped[OrganizationIntegration] = relationship(lazy="raise")

    __table_args__ = (
        # Also the index for look-ups by organization integration alone.
        UniqueConstraint("organization_integration_id", "label"),
        # The console's counts by status, per organization and per platform: an
        # index-only scan that GROUP BY reads in order, however many teams there are.
        Index("ix_teams_link_status", "organization_integration_id", "status"),
        # A check rewrites only columns that no index covers (status only when it
        # changes, which is rare): with room left on the page, PostgreSQL keeps the
        # new row version there without new index entries.
        {"postgresql_with": {"fillfactor": 90}},
    )

    @staticmethod
    def make_id(organization_integration_id: int, label: str) -> str:
        """The reference id convention: `<organization_integration_id>-<label>`."""
        return f"{organization_integration_id}-{label}"


IDEMPOTENCY_KEY_MAX = 200


class IdempotentCreate(Base):
    """An Idempotency-Key an organization sent with a create, and what it created.

    Keys are the organization's own: another organization's key of the same text is
    another row. `fingerprint` is the SHA-256 of what was asked (never a key), so a
    key sent again with other fields is refused; `resource` names what was created
    (`integration:7`, `team:3-payments`), None until the creating transaction set it.
    """

    __tablename__ = "idempotent_creates"

    organization_id: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX))
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(TEAM_ID_MAX + 16))
    request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The check asked for with a team's key, given back with the team."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (PrimaryKeyConstraint("organization_id", "idempotency_key"),)
