"""Team status transitions: one row each time what we know of a key changes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TeamStatus, enum_column, utcnow


class TeamStatusChange(Base):
    """A team's status moved from `old_status` to `new_status` because of one request.

    At most one row per request (unique `request_id`): a request delivered twice
    cannot record its transition twice.
    """

    __tablename__ = "team_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(
        String(300), ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    old_status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus))
    new_status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Delivery of the status-change event to OGV_STATUS_WEBHOOK_URL.
    notified_at: Mapped[datetime | None]
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
