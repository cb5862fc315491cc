"""History: team status transitions, integrations moved between platforms, platform
alarms, and the changes the mass-change guard holds back."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TeamStatus, enum_column, utcnow
from models.integration import ACCOUNT_MAX


class TeamStatusChange(Base):
    """A team's status moved from `old_status` to `new_status` because of one request.

    At most one row per request (unique `request_id`): a request delivered twice
    cannot record its transition twice. Removing a team leaves its rows to
    `OGV_HISTORY_RETENTION_DAYS` (`worker.periodic.retention`).
    """

    __tablename__ = "team_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key: a removed team's history stays, until the retention prunes it.
    team_id: Mapped[str] = mapped_column(String(300), index=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    old_status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus))
    new_status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus))
    # Indexed for the console's changes per day, which reads the last 30 days only.
    changed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Delivery of the status-change event to OGV_STATUS_WEBHOOK_URL.
    notified_at: Mapped[datetime | None]
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class IntegrationMove(Base):
    """An integration moved to another platform (`ogv integration migrate`)."""

    __tablename__ = "integration_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    from_platform: Mapped[str] = mapped_column(String(32))
    to_platform: Mapped[str] = mapped_column(String(32))
    from_base_url: Mapped[str] = mapped_column(String(255))
    to_base_url: Mapped[str] = mapped_column(String(255))
    teams: Mapped[int] = mapped_column(Integer)
    teams_ready: Mapped[int] = mapped_column(Integer)
    forced: Mapped[bool] = mapped_column(Boolean)
    moved_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlatformHealth(Base):
    """How one base URL has been answering: the window that decides it is unavailable.

    Most answers in a window not being the platform's own (a retired host, a proxy
    in the way) makes it unavailable; `unavailable_since` is set once, and cleared
    once when a later window answers like the platform again.
    """

    __tablename__ = "platform_health"

    base_url: Mapped[str] = mapped_column(String(255), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    answers: Mapped[int] = mapped_column(Integer, default=0)
    unrecognised: Mapped[int] = mapped_column(Integer, default=0)
    unavailable_since: Mapped[datetime | None]
    changed_at: Mapped[datetime | None]


class HeldChange(Base):
    """A confirmed change from `valid` to a failing status that the mass-change guard
    held: the team kept `valid`, and this row keeps the evidence until an operator
    releases or discards it, or a re-check finds the key valid again.

    At most one per team (unique `team_id`): a later held verdict replaces it.
    """

    __tablename__ = "held_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(
        String(300), ForeignKey("teams.id", ondelete="CASCADE"), unique=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    base_url: Mapped[str] = mapped_column(String(255), index=True)
    account: Mapped[str] = mapped_column(String(ACCOUNT_MAX))
    key_version: Mapped[int] = mapped_column(Integer)
    old_status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus))
    new_status: Mapped[TeamStatus] = mapped_column(enum_column(TeamStatus))
    http_status: Mapped[int | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(default=utcnow)
    rechecked_at: Mapped[datetime | None]


class GuardWindow(Base):
    """The mass-change guard's sliding window for one base URL, where the workers share
    it through the database (no OGV_REDIS_URL): `buckets` is its JSON document."""

    __tablename__ = "guard_windows"

    base_url: Mapped[str] = mapped_column(String(255), primary_key=True)
    buckets: Mapped[str] = mapped_column(Text, default="{}")
    tripped_at: Mapped[datetime | None]
    trips: Mapped[int] = mapped_column(Integer, default=0)


class SunsetNotice(Base):
    """An integration's deadline came within `threshold` days: announced once.

    One row per integration, deadline and threshold (30, 7, 1): the unique
    constraint makes the announcement once however many beats or restarts run the
    check, and a deadline that moves (a switch-off recorded later) gets notices of
    its own. `notified_at` marks the webhook document delivered; the outbox
    sweeper re-publishes one whose message was lost.
    """

    __tablename__ = "sunset_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    deadline: Mapped[date] = mapped_column(Date)
    threshold: Mapped[int] = mapped_column(Integer)
    days_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[datetime | None]
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (UniqueConstraint("integration_id", "deadline", "threshold"),)


class BaseUrlEvent(Base):
    """Something that happened to a base URL and is announced to the webhook: it turned
    unavailable or recovered (`platform_health`), or its mass-change guard tripped.

    Written in the transaction that decided it, so the document outlives a lost
    message: the webhook task reads it by id, and the outbox sweeper sends again the
    ones not delivered. `key` names the event once (a base URL and the moment of
    its transition, or its trip number): deciding it twice cannot write it twice.
    """

    __tablename__ = "base_url_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    event: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(255))
    document: Mapped[str] = mapped_column(Text)
    """The webhook's JSON: base URLs and counts, never a key."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    notified_at: Mapped[datetime | None]
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
