"""Who may call the API, and what operators and callers did: API tokens and the audit log.

A token's secret is never stored: `token_hash` is the SHA-256 of the token, which
is long and random (`worker/access.py` makes it), so a hash is all a check needs
and a copy of the table gives nobody a way in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow

TOKEN_NAME_MAX = 64
ACTOR_MAX = 200
ACTION_MAX = 64
TARGET_MAX = 300


class ApiToken(Base):
    """A named API token: its scopes, the organizations it is limited to, and its life.

    `scopes` is a comma-separated list (`read`, `validate`, `operate`, `manage`);
    `organizations` a comma-separated list of organization ids, or None for every
    organization. A revoked token keeps its row (and its name) for the record.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_MAX), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(100))
    organizations: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(ACTOR_MAX))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    """One action of an operator (`cli:<os user>`) or an API caller (`token:<name>`).

    `details` is a JSON object of what else the action took or did (counts, flags),
    never a key or a token. Ids grow with time: the newest events have the largest.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(ACTOR_MAX))
    action: Mapped[str] = mapped_column(String(ACTION_MAX))
    organization_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    target: Mapped[str | None] = mapped_column(String(TARGET_MAX))
    details: Mapped[str] = mapped_column(Text, default="{}")
