"""How long history is kept: beat's `ogv.prune_history` and `ogv.prune_audit`.

`team_status_changes` gains a row for every change of a team's status, for good:
at 10M teams with a few percent changing a day that is hundreds of thousands of
rows a day (docs/SCALING.md). Rows older than `OGV_HISTORY_RETENTION_DAYS` are
deleted a page at a time, each page in its own short transaction. The audit log
(`audit_events`) is pruned the same way after `OGV_AUDIT_RETENTION_DAYS`.

Neither table has an index on its time column, and needs none: rows are inserted
as they happen, so ids grow with time and the old rows are the table's first ids.
A page is read from the primary key in id order; its old rows are deleted, and
the run stops at the first page that is not entirely old. Each page therefore
reads `page_size` rows of the primary key, however large the table is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from models import AuditEvent, TeamStatusChange, utcnow

log = logging.getLogger("ogv.retention")

PAGE_SIZE = 5_000
MAX_PAGES = 200
"""At most a million rows a run: a first run on a large table spreads over several."""


@dataclass(frozen=True)
class Kept:
    """A table pruned by age: its model, its time column, and its log event."""

    model: type[Any]
    at: InstrumentedAttribute[datetime]
    event: str


HISTORY = Kept(TeamStatusChange, TeamStatusChange.changed_at, "history.pruned")
AUDIT = Kept(AuditEvent, AuditEvent.at, "audit.pruned")


def prune_page(
    session: Session, before: datetime, page_size: int = PAGE_SIZE, kept: Kept = HISTORY
) -> tuple[int, bool]:
    """Delete the oldest page's rows older than `before`: (deleted, page wholly old)."""
    rows = session.execute(
        select(kept.model.id, kept.at).order_by(kept.model.id).limit(page_size)
    ).all()
    old = [row_id for row_id, at in rows if at < before]
    if old:
        session.execute(delete(kept.model).where(kept.model.id.in_(old)))
    return len(old), bool(rows) and len(old) == len(rows)


def prune(
    sessions: sessionmaker[Session],
    kept: Kept,
    retention_days: int,
    *,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> int:
    """Delete `kept`'s rows older than `retention_days` (0: none); how many went."""
    if retention_days <= 0:
        return 0
    before = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    for _ in range(max_pages):
        with sessions.begin() as session:
            count, more = prune_page(session, before, page_size, kept)
        deleted += count
        if not more:
            break
    if deleted:
        log.info(kept.event, extra={"deleted": deleted, "retention_days": retention_days})
    return deleted


def prune_history(
    sessions: sessionmaker[Session],
    retention_days: int,
    *,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> int:
    """Delete the status history older than `retention_days` (0: none); how many went."""
    return prune(
        sessions, HISTORY, retention_days, now=now, page_size=page_size, max_pages=max_pages
    )


def prune_audit(
    sessions: sessionmaker[Session],
    retention_days: int,
    *,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> int:
    """Delete the audit events older than `retention_days` (0: none); how many went."""
    return prune(sessions, AUDIT, retention_days, now=now, page_size=page_size, max_pages=max_pages)
