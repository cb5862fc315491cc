"""Asking for a check: record the request, then publish its id.

The row is committed before the message is published, so a worker never receives
an id it cannot find, and a request whose publish failed is still on record.
Publishing uses the task's registered name: a producer needs the broker and
database URLs, not the worker's code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from models import Requester, RequestState, ValidationRequest, utcnow
from worker.checks import requests
from worker.checks.advice import request_hint
from worker.platforms.hints import Hint

VALIDATE_TASK = "ogv.validate_request"
"""The registered task name; part of the service's interface for producers."""
SWEEP_TASK = "ogv.sweep_outbox"
BATCH_TASK = "ogv.validate_batch"
REVALIDATE_TASK = "ogv.revalidate"
NOTIFY_TASK = "ogv.notify_status_change"
NOTIFY_PLATFORM_TASK = "ogv.notify_platform_change"
PRUNE_TASK = "ogv.prune_history"
PRUNE_AUDIT_TASK = "ogv.prune_audit"
RECHECK_HELD_TASK = "ogv.recheck_held"
SUNSET_TASK = "ogv.announce_sunset"
NOTIFY_SUNSET_TASK = "ogv.notify_sunset"


@dataclass(frozen=True)
class RequestView:
    """A validation request as producers see it: one check of one team's key."""

    id: str
    organization_id: int
    integration_id: int
    team_id: str
    requested_by: str
    state: str
    """`confirming`: a failing verdict about a valid team's key waits for a second check
    (OGV_CONFIRM_AFTER seconds later) before the team's status changes; the request is
    not finished yet."""
    outcome: str | None
    """Set once the state is done or failed (see the README)."""
    message: str | None
    http_status: int | None
    error_code: str | None
    """Why it failed or was refused: e.g. unrecognised_answer, malformed_key, throttled,
    timeout."""
    works_on: list[str]
    """Other platforms where the key works, when it turned invalid."""
    rate_limit_state: str | None
    rate_limit_reason: str | None
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    confirmation: str | None = None
    """Whether a second check `confirmed` or `disagreed` with a failing verdict; null when
    none ran."""
    second_check_at: datetime | None = None
    """When the second check of a `confirming` request is due; null in any other state."""
    hint: Hint | None = None
    """What to do about the outcome, and where (a stable code and one sentence); null while
    the check runs, and for a valid key with nothing to do."""

    @property
    def is_final(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def is_confirming(self) -> bool:
        return self.state == RequestState.CONFIRMING.value

    @classmethod
    def of(cls, row: ValidationRequest, hint: Hint | None = None) -> RequestView:
        return cls(
            id=str(row.id),
            organization_id=row.organization_id,
            integration_id=row.integration_id,
            team_id=row.team_id,
            requested_by=row.requested_by.value,
            state=row.state.value,
            outcome=row.outcome.value if row.outcome else None,
            message=row.message,
            http_status=row.http_status,
            error_code=row.error_code,
            works_on=row.works_on.split(",") if row.works_on else [],
            rate_limit_state=row.rate_limit_state,
            rate_limit_reason=row.rate_limit_reason,
            attempts=row.attempts,
            created_at=row.created_at,
            finished_at=row.finished_at,
            confirmation=row.confirmation,
            second_check_at=(row.next_attempt_at if row.state is RequestState.CONFIRMING else None),
            hint=hint,
        )


def publish(app: Celery, request_id: uuid.UUID, countdown: float | None = None) -> None:
    # argsrepr is what Flower and the worker log show: the id, named.
    app.send_task(
        VALIDATE_TASK,
        args=[str(request_id)],
        countdown=countdown,
        argsrepr=f"(request={request_id})",
    )


def publish_batch(app: Celery, batch_id: uuid.UUID, countdown: float | None = None) -> None:
    app.send_task(BATCH_TASK, args=[str(batch_id)], countdown=countdown or None)


@dataclass(frozen=True)
class Submitted:
    """The answer to a request for a check: the request as recorded, and whether it is new."""

    view: RequestView
    created: bool

    @property
    def request_id(self) -> uuid.UUID:
        return uuid.UUID(self.view.id)


def request_validation(
    sessions: sessionmaker[Session],
    app: Celery,
    *,
    organization_id: int,
    integration_id: int,
    team_id: str,
    requested_by: Requester,
    idempotency_key: str | None = None,
) -> Submitted:
    """Record a request, commit it, then publish it (the transactional outbox).

    A team that already has a check pending or running gets that one back and
    nothing is published. If publishing fails, the committed row stays pending
    and the outbox sweeper publishes it later; the error still reaches the caller.
    """
    with sessions.begin() as session:
        request, created = requests.create_request(
            session,
            organization_id=organization_id,
            integration_id=integration_id,
            team_id=team_id,
            requested_by=requested_by,
            idempotency_key=idempotency_key,
        )
        submitted = Submitted(RequestView.of(request), created)
    if created:
        publish(app, submitted.request_id)
    return submitted


def request_validations(
    sessions: sessionmaker[Session],
    app: Celery,
    asks: Sequence[requests.Ask],
    *,
    requested_by: Requester,
) -> dict[requests.Ask, Submitted]:
    """`request_validation` for many teams: one transaction, and one message for the new ones.

    The new requests share a batch id and go out as one batch task, checked
    concurrently and written together by the worker. An ask missing from the
    answer met a race (its team's active check just finished): ask again alone.
    """
    batch_id = uuid.uuid4() if len(set(asks)) > 1 else None
    with sessions.begin() as session:
        answers = requests.create_requests(
            session, asks, requested_by=requested_by, batch_id=batch_id
        )
        submitted = {
            ask: Submitted(RequestView.of(request), created)
            for ask, (request, created) in answers.items()
        }
    new = [s.request_id for s in submitted.values() if s.created]
    if batch_id is not None and len(new) > 1:
        publish_batch(app, batch_id)
    elif new:
        publish(app, new[0])
    return submitted


def get_request(sessions: sessionmaker[Session], request_id: uuid.UUID) -> RequestView | None:
    with sessions() as session:
        row = session.get(ValidationRequest, request_id)
        if row is None:
            return None
        return RequestView.of(row, request_hint(session, row) if row.state.is_final else None)


def wait_for(
    sessions: sessionmaker[Session],
    request_id: uuid.UUID,
    timeout: float,
    poll_interval: float = 0.05,
) -> RequestView | None:
    """Poll until the request is final or `timeout` passes; returns its last view.

    A `confirming` request whose second check is due after the deadline is returned
    at once: waiting could not end in any other state.
    """
    deadline = time.monotonic() + timeout
    while True:
        view = get_request(sessions, request_id)
        if view is None or view.is_final or time.monotonic() >= deadline:
            return view
        if _confirms_after(view, deadline - time.monotonic()):
            return view
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def _confirms_after(view: RequestView, seconds: float) -> bool:
    """Whether `view` is confirming with its second check due more than `seconds` from now."""
    due = view.second_check_at
    return due is not None and due > utcnow() + timedelta(seconds=seconds)
