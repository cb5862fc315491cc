"""Base-URL events: what happened to a base URL, kept until the webhook has it.

A base URL turning unavailable or recovering (worker/checks/platform_health.py),
or its mass-change guard tripping (worker/checks/guard.py), is a row of
`base_url_events` written in the transaction that decided it, with its document:
the webhook task reads it by id, and the outbox sweeper sends again the ones whose
message was lost, under the same `Idempotency-Key` (the row's `key`). As for
status changes (worker/checks/events.py), nothing here ever holds a key.

Functions take a connection or session and never commit.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import BaseUrlEvent, utcnow

_EVENTS = cast(Table, BaseUrlEvent.__table__)


def record(connection: Connection, key: str, base_url: str, document: dict[str, Any]) -> int | None:
    """Keep an event's document until it is delivered; its id, or None when an event
    of that `key` was recorded before (then it is not announced again)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    event_id: int | None = connection.scalar(
        dialect.insert(_EVENTS)
        .values(
            key=key,
            event=document["event"],
            base_url=base_url,
            document=json.dumps(document),
            created_at=utcnow(),
            notify_attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(_EVENTS.c.id)
    )
    return event_id


def read(session: Session, event_id: int) -> tuple[str, dict[str, Any]] | None:
    """An undelivered event's idempotency key and document; None once delivered."""
    row = session.execute(
        select(BaseUrlEvent.key, BaseUrlEvent.document).where(
            BaseUrlEvent.id == event_id, BaseUrlEvent.notified_at.is_(None)
        )
    ).first()
    return None if row is None else (row.key, json.loads(row.document))


def mark_delivered(session: Session, event_id: int) -> None:
    session.execute(
        update(BaseUrlEvent)
        .where(BaseUrlEvent.id == event_id)
        .values(notified_at=utcnow(), notify_attempts=BaseUrlEvent.notify_attempts + 1)
    )


def count_attempt(session: Session, event_id: int) -> int:
    session.execute(
        update(BaseUrlEvent)
        .where(BaseUrlEvent.id == event_id)
        .values(notify_attempts=BaseUrlEvent.notify_attempts + 1)
    )
    attempts = select(BaseUrlEvent.notify_attempts).where(BaseUrlEvent.id == event_id)
    return session.scalar(attempts) or 0


def undelivered(
    session: Session, older_than: timedelta, max_attempts: int, limit: int
) -> list[int]:
    """Events whose delivery is overdue (its message was lost): to publish again."""
    return list(
        session.scalars(
            select(BaseUrlEvent.id)
            .where(
                BaseUrlEvent.notified_at.is_(None),
                BaseUrlEvent.notify_attempts < max_attempts,
                BaseUrlEvent.created_at < utcnow() - older_than,
            )
            .order_by(BaseUrlEvent.id)
            .limit(limit)
        )
    )
