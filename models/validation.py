"""Validation requests: one row per requested check, the task's only input."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Outcome, Requester, RequestState, enum_column, utcnow


class ValidationRequest(Base):
    """One requested check of one team's key, and what became of it.

    The Celery message carries only `id`; everything else is re-read from here.
    """

    __tablename__ = "validation_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[int] = mapped_column(BigInteger)
    integration_id: Mapped[int] = mapped_column(BigInteger)
    team_id: Mapped[str] = mapped_column(String(300))
    requested_by: Mapped[Requester] = mapped_column(enum_column(Requester))
    state: Mapped[RequestState] = mapped_column(
        enum_column(RequestState), default=RequestState.PENDING
    )
    outcome: Mapped[Outcome | None] = mapped_column(enum_column(Outcome))
    message: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_validation_requests_team_state", "team_id", "state"),
        Index("ix_validation_requests_state_created", "state", "created_at"),
    )
