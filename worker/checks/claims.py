"""Claiming requests for an attempt, and putting one back for a retry.

Functions take a session and never commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from models import (
    Outcome,
    RequestState,
    ValidationRequest,
    utcnow,
)
from worker.checks.records import fit
from worker.checks.requests import FINAL_STATES
from worker.checks.rules import Result

_REQUESTS = cast(Table, ValidationRequest.__table__)


@dataclass(frozen=True)
class Claim:
    """A request claimed for an attempt: what the rules need to resolve it."""

    id: uuid.UUID
    organization_id: int
    integration_id: int
    team_id: str
    attempts: int
    """Calls made for this request so far, both checks of a confirmation together."""
    confirming: Outcome | None = None
    """The failing verdict this attempt must confirm (a `confirming` request's)."""
    first_check_attempts: int = 0
    """The first check's share of `attempts`, once a second check is due."""

    @property
    def check_attempts(self) -> int:
        """Calls made by this check alone: what its retries are counted against."""
        return self.attempts - self.first_check_attempts


def claim_one(session: Session, request_id: uuid.UUID, lease: timedelta) -> list[Claim]:
    """Claim one request for an attempt: nothing if it is already final (or unknown)."""
    return _claim(session, ValidationRequest.id == request_id, lease)


def claim_batch(session: Session, batch_id: uuid.UUID, lease: timedelta) -> list[Claim]:
    """Claim every request of a batch that is not final yet."""
    return _claim(session, ValidationRequest.batch_id == batch_id, lease)


def _claim(session: Session, which: ColumnElement[bool], lease: timedelta) -> list[Claim]:
    """Mark requests running under a lease, and return them: one UPDATE ... RETURNING.

    If the worker dies, the lease lapses and the outbox sweeper publishes the
    request again. `attempts` counts calls made to Opsgenie, so it is written when
    one was made (`note_retry`, `finish_many`), not here. The rows are locked in id
    order (the subquery), so two deliveries of one batch cannot deadlock.
    """
    now = utcnow()
    locked = (
        select(ValidationRequest.id)
        .where(which, ValidationRequest.state.not_in(FINAL_STATES))
        .order_by(ValidationRequest.id)
        .with_for_update()
    )
    columns = _REQUESTS.c
    rows = session.connection().execute(
        update(_REQUESTS)
        .where(columns.id.in_(locked.scalar_subquery()))
        .values(
            state=RequestState.RUNNING,
            started_at=func.coalesce(columns.started_at, now),
            lease_until=now + lease,
            next_attempt_at=None,
        )
        .returning(
            columns.id,
            columns.organization_id,
            columns.integration_id,
            columns.team_id,
            columns.attempts,
            columns.confirming_outcome,
            func.coalesce(columns.first_check_attempts, 0),
        )
    )
    return sorted((Claim(*row) for row in rows), key=lambda claim: claim.id)


def note_retry(
    session: Session, request_id: uuid.UUID, result: Result, attempts: int, delay: float
) -> None:
    """Record a transient failure on a request that will be tried in `delay` seconds.

    The columns are `fit` like a finished request's, so a note cannot fail to fit.
    """
    values = fit(
        _REQUESTS,
        {
            "state": RequestState.PENDING,
            "message": result.message,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "rate_limit_state": result.rate_limit_state,
            "rate_limit_reason": result.rate_limit_reason,
            "attempts": attempts,
            "lease_until": None,
            "next_attempt_at": utcnow() + timedelta(seconds=delay),
        },
    )
    session.execute(
        update(ValidationRequest)
        .where(ValidationRequest.id == request_id, ValidationRequest.state.not_in(FINAL_STATES))
        .values(values)
    )
