"""Recording checks: a pending request per ask, or the team's active one.

At most one request per team is open (pending, running or confirming: a partial
unique index), so producers that ask about one team at once share one check. Functions take a
session and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import (
    Outcome,
    Requester,
    RequestState,
    ValidationRequest,
    utcnow,
)
from models.db import from_arrays
from models.ids import new_request_id, request_id_sql
from worker.errors import Busy, RecordError

FINAL_STATES = (RequestState.DONE, RequestState.FAILED)

_REQUESTS = cast(Table, ValidationRequest.__table__)


class IdempotencyConflict(RecordError):
    """Raised when an Idempotency-Key was already used for a different team."""

    code = "idempotency_conflict"


@dataclass(frozen=True)
class Ask:
    """Which team a producer wants checked."""

    organization_id: int
    integration_id: int
    team_id: str


def create_request(
    session: Session,
    *,
    organization_id: int,
    integration_id: int,
    team_id: str,
    requested_by: Requester,
    idempotency_key: str | None = None,
) -> tuple[ValidationRequest, bool]:
    """Record a request, or join the team's active one; True when it is new.

    At most one request per team is pending or running (a partial unique index),
    so concurrent producers asking about one team share one check. The same
    `idempotency_key` always returns the same request; keys are the organization's
    own, so another organization's same key neither collides nor shows.
    """
    ask = Ask(organization_id, integration_id, team_id)
    for _ in range(3):
        if idempotency_key is not None:
            earlier = session.scalars(
                select(ValidationRequest).where(
                    ValidationRequest.organization_id == organization_id,
                    ValidationRequest.idempotency_key == idempotency_key,
                )
            ).first()
            if earlier is not None:
                if _ask_of(earlier) != ask:
                    raise IdempotencyConflict("that idempotency key was used for another team")
                return earlier, False
        answer = create_requests(
            session, [ask], requested_by=requested_by, idempotency_key=idempotency_key
        ).get(ask)
        if answer is not None:
            return answer
    raise Busy("could not record the request; try again")


def create_requests(
    session: Session,
    asks: Sequence[Ask],
    *,
    requested_by: Requester,
    batch_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> dict[Ask, tuple[ValidationRequest, bool]]:
    """Record a request per ask in one INSERT, or join the team's active one.

    Returns, per ask, its request and True when the request is new. Asks for a
    team with a check pending or running (an earlier producer's, or a repeat in
    `asks`) get that check. An ask is missing from the answer only when its team's
    active check finished between the INSERT and the look-up, or its
    `idempotency_key` (for a single ask: unique within its organization) was taken
    by another team's request meanwhile.
    """
    wanted = list(dict.fromkeys(asks))
    if not wanted:
        return {}
    now = utcnow()
    rows = in_index_order(
        [
            request_row(ask, requested_by, now, idempotency_key=idempotency_key, batch_id=batch_id)
            for ask in wanted
        ]
    )
    # ON CONFLICT DO NOTHING: the partial unique index turns an ask for a team with an
    # active check into a no-op, and RETURNING gives back only the rows inserted.
    inserted = session.scalars(
        insert_skipping_active(session).values(rows).returning(ValidationRequest)
    ).all()
    answers = {_ask_of(request): (request, True) for request in inserted}
    joined = [ask for ask in wanted if ask not in answers]
    if joined:
        for request in _active_requests(session, joined):
            answers.setdefault(_ask_of(request), (request, False))
    return answers


def insert_skipping_active(session: Session, into: Any = ValidationRequest) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a team with an active check is skipped."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(into).on_conflict_do_nothing()
    return sqlite.insert(into).on_conflict_do_nothing()


def insert_pending(session: Session, rows: list[dict[str, Any]], **same: Any) -> None:
    """Insert new requests in bulk, skipping the teams that have an active check.

    `rows` hold what differs between the requests (`organization_id`,
    `integration_id`, `team_id` and any other column), `same` the columns they
    all share (`pending_columns`, say). The dispatcher inserts a page at a time:
    on PostgreSQL one INSERT ... SELECT over one array per column that differs,
    with time-ordered ids made by PostgreSQL (`models.ids`); elsewhere a Core executemany.
    """
    if not rows:
        return
    ordered = in_index_order(rows)
    skipping = insert_skipping_active(session, _REQUESTS)
    if session.get_bind().dialect.name == "postgresql":
        given = from_arrays(_REQUESTS, ordered, id=request_id_sql(), **same)
        session.connection().execute(skipping.from_select(*given))
    else:
        session.connection().execute(
            skipping, [{"id": new_request_id(), **row, **same} for row in ordered]
        )


def request_row(ask: Ask, requested_by: Requester, now: datetime, **columns: Any) -> dict[str, Any]:
    """The columns of a new pending request for `ask`, for `insert_skipping_active`."""
    return {
        "id": new_request_id(),
        "organization_id": ask.organization_id,
        "integration_id": ask.integration_id,
        "team_id": ask.team_id,
        **pending_columns(requested_by, now),
        **columns,
    }


def pending_columns(requested_by: Requester, now: datetime) -> dict[str, Any]:
    """The columns every new pending request starts with."""
    return {
        "requested_by": requested_by,
        "state": RequestState.PENDING,
        "attempts": 0,
        "created_at": now,
        "published_at": now,
    }


def in_index_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`request_row`s sorted as the unique index on active requests orders them.

    Every producer inserts in this order: two inserting overlapping teams in
    opposite orders would each wait on the other's uncommitted row (ON CONFLICT
    waits for it) and deadlock.
    """
    return sorted(rows, key=lambda r: (r["organization_id"], r["integration_id"], r["team_id"]))


def _ask_of(request: ValidationRequest) -> Ask:
    return Ask(request.organization_id, request.integration_id, request.team_id)


def _active_requests(session: Session, asks: Sequence[Ask]) -> Sequence[ValidationRequest]:
    return session.scalars(
        select(ValidationRequest).where(
            tuple_(
                ValidationRequest.organization_id,
                ValidationRequest.integration_id,
                ValidationRequest.team_id,
            ).in_([(a.organization_id, a.integration_id, a.team_id) for a in asks]),
            ValidationRequest.state.not_in(FINAL_STATES),
        )
    ).all()


def close_open(
    session: Session,
    organization_id: int,
    integration_id: int,
    team_ids: Sequence[str] | None,
    *,
    outcome: Outcome,
    error_code: str,
    message: str,
) -> int:
    """End the open requests of these teams (every team of the integration: None) with
    `outcome`, before their check can answer; how many were open.

    A check already running finds its request final and writes nothing
    (`records.finish_many`), and a pending one is never claimed: nothing it learned
    about a key since replaced or removed reaches a team.
    """
    where = [
        _REQUESTS.c.organization_id == organization_id,
        _REQUESTS.c.integration_id == integration_id,
        _REQUESTS.c.state.not_in(FINAL_STATES),
    ]
    if team_ids is not None:
        if not team_ids:
            return 0
        where.append(_REQUESTS.c.team_id.in_(team_ids))
    closed = session.connection().execute(
        update(_REQUESTS)
        .where(*where)
        .values(
            state=RequestState.FAILED,
            outcome=outcome,
            error_code=error_code,
            message=message,
            finished_at=utcnow(),
            lease_until=None,
            next_attempt_at=None,
        )
    )
    return closed.rowcount
