"""The outbox sweeper: no committed request is ever left without a message.

A request row is committed before its message is published. If the publish
failed, the broker lost the message (this machine's Redis keeps nothing on disk),
or the worker running it died, the row is still there: pending past its due time,
or running past its lease. The sweeper (a beat task) publishes those again.
Running a request twice is harmless: a finished request is not run again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import RequestState, ValidationRequest, utcnow

log = logging.getLogger("ogv.outbox")


def claim_stranded(session: Session, republish_after: timedelta, limit: int) -> list[uuid.UUID]:
    """Mark up to `limit` stranded requests as published now and return their ids.

    Stranded: pending or confirming and not published (or not due for its retry or
    second check) for longer than `republish_after`, or running with a lapsed lease.
    """
    now = utcnow()
    due = func.coalesce(
        ValidationRequest.next_attempt_at,
        ValidationRequest.published_at,
        ValidationRequest.created_at,
    )
    waiting = ValidationRequest.state.in_((RequestState.PENDING, RequestState.CONFIRMING))
    stranded = or_(
        and_(waiting, due < now - republish_after),
        and_(ValidationRequest.state == RequestState.RUNNING, ValidationRequest.lease_until < now),
    )
    ids = list(
        session.scalars(
            select(ValidationRequest.id)
            .where(stranded)
            .order_by(ValidationRequest.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(ValidationRequest)
            .where(ValidationRequest.id.in_(ids))
            .values(
                # A confirming request stays so: its second check is what is published.
                state=case(
                    (ValidationRequest.state == RequestState.CONFIRMING, RequestState.CONFIRMING),
                    else_=RequestState.PENDING,
                ),
                published_at=now,
                next_attempt_at=None,
                lease_until=None,
            )
        )
    return ids


def sweep(
    sessions: sessionmaker[Session],
    publish: Callable[[uuid.UUID], None],
    republish_after: timedelta,
    limit: int = 1000,
    publish_batch: Callable[[uuid.UUID], None] | None = None,
) -> int:
    """Publish every stranded request again; returns how many were stranded.

    With `publish_batch`, the requests of a re-validation batch go back as one
    message per batch. One message per request would turn a backlog older than
    `republish_after` into thousands of single checks, each far slower than its
    share of a batch: the workers fall further behind and strand even more.
    """
    with sessions.begin() as session:
        ids = claim_stranded(session, republish_after, limit)
        batches = _batches_of(session, ids) if publish_batch is not None and ids else {}
    for batch_id in sorted(set(batches.values())):
        assert publish_batch is not None
        publish_batch(batch_id)
    for request_id in ids:
        if request_id not in batches:
            publish(request_id)
    if ids:
        log.warning(
            "outbox.republished",
            extra={"count": len(ids), "batches": len(set(batches.values()))},
        )
    return len(ids)


def _batches_of(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Request id → batch id, for the requests that belong to a batch."""
    rows = session.execute(
        select(ValidationRequest.id, ValidationRequest.batch_id).where(
            ValidationRequest.id.in_(ids), ValidationRequest.batch_id.is_not(None)
        )
    )
    return {request_id: batch_id for request_id, batch_id in rows if batch_id is not None}
