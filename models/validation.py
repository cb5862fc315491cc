"""Validation requests: one row per requested check, the task's only input."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Outcome, Requester, RequestState, enum_column, utcnow
from models.ids import new_request_id

OPEN_STATES_SQL = "state IN ('pending', 'running', 'confirming')"
"""The states of a request that is not finished, as the coalescing index names them."""
FINISHED_SQL = "finished_at IS NOT NULL"
"""A finished request (done or failed), as the retention's indexes name it."""
KEYED_SQL = "idempotency_key IS NOT NULL"
"""A request asked for with an Idempotency-Key (most are not)."""


class ValidationRequest(Base):
    """One requested check of one team's key, and what became of it.

    The Celery message carries only `id`; everything else is re-read from here.
    """

    __tablename__ = "validation_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_request_id)
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
    # Where else the key works, when it turned invalid here (comma-separated platforms).
    works_on: Mapped[str | None] = mapped_column(String(100))
    # X-RateLimit-State and X-RateLimit-Reason of the last 429.
    rate_limit_state: Mapped[str | None] = mapped_column(String(32))
    rate_limit_reason: Mapped[str | None] = mapped_column(String(32))
    # Calls to Opsgenie for this request, both checks of a confirmation together;
    # `first_check_attempts` keeps the first check's share once a second one is due.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_check_attempts: Mapped[int | None] = mapped_column(Integer)
    # Confirmation: the first failing verdict about a valid team's key, awaiting a
    # second check; then whether the second check `confirmed` or `disagreed`.
    confirming_outcome: Mapped[Outcome | None] = mapped_column(enum_column(Outcome))
    confirmation: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    # The outbox: when a message was last published for the request, when a
    # scheduled retry is due, and until when a worker holds it (a lease that
    # lapses if the worker dies mid-run).
    published_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]

    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    """The producer's Idempotency-Key, unique within its organization (an index below):
    one organization's keys never collide with, nor reveal, another's."""
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("validation_runs.id", ondelete="SET NULL"), index=True
    )
    batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)

    __table_args__ = (
        Index("ix_validation_requests_state_created", "state", "created_at"),
        # Retention (worker/periodic/retention.py): the finished requests in the order
        # they finished, so that each page of pruning is a range scan of this index...
        Index(
            "ix_validation_requests_finished",
            "finished_at",
            "id",
            postgresql_where=text(FINISHED_SQL),
            sqlite_where=text(FINISHED_SQL),
        ),
        # ... and each team's finished requests, newest last: its latest is kept.
        Index(
            "ix_validation_requests_team_finished",
            "organization_id",
            "integration_id",
            "team_id",
            "finished_at",
            postgresql_where=text(FINISHED_SQL),
            sqlite_where=text(FINISHED_SQL),
        ),
        Index(
            "uq_validation_requests_organization_idempotency_key",
            "organization_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text(KEYED_SQL),
            sqlite_where=text(KEYED_SQL),
        ),
        # Coalescing: at most one open (pending, running, confirming) request per team.
        Index(
            "uq_validation_requests_open_team",
            "organization_id",
            "integration_id",
            "team_id",
            unique=True,
            postgresql_where=text(OPEN_STATES_SQL),
            sqlite_where=text(OPEN_STATES_SQL),
        ),
    )


class ValidationRun(Base):
    """A re-validation of many teams (beat, or `ogv revalidate`): its requests share it."""

    __tablename__ = "validation_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    requested_by: Mapped[Requester] = mapped_column(enum_column(Requester))
    organization_id: Mapped[int | None] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]


class HealthCheck(Base):
    """A canary sent by `ogv health`: a worker that consumes marks it seen."""

    __tablename__ = "health_checks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(255))


class ApiProcess(Base):
    """A running `ogv api` and the encryption keys it holds, by their fingerprints.

    An API writes its row when it starts and again every little while, and deletes
    it when it stops; `ogv keys rotate` asks the rows seen lately whether their API
    holds the new key (worker/key_holders.py).
    """

    __tablename__ = "api_processes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprints: Mapped[str] = mapped_column(Text)
    """Comma-separated fingerprints (`models.crypto.fingerprint`), newest key first."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


REQUESTS_RETENTION = "requests"
"""The requests' retention's row in `retention_marks`."""


class RetentionMark(Base):
    """How far one retention (`requests`) has gone: where its next page starts, and
    the moment before which every prunable row is gone.

    Pruning walks the finished requests in the order they finished, keeping some
    (a team's latest, one a status change or a held change refers to). The walk goes
    on from `cursor_finished_at`/`cursor_id` at the next run, so the kept rows are
    stepped over once per pass, not once per run; a pass that reaches the cut-off
    sets `pruned_before` and starts again from the oldest row.
    """

    __tablename__ = "retention_marks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor_finished_at: Mapped[datetime | None]
    cursor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    pruned_before: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
