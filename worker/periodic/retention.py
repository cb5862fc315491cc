"""How long the status history is kept: beat's `ogv.prune_history`.

`team_status_changes` gains a row for every change of a team's status, for good:
at 10M teams with a few percent changing a day that is hundreds of thousands of
rows a day (docs/SCALING.md). Rows older than `OGV_HISTORY_RETENTION_DAYS` are
deleted a page at a time, each page in its own short transaction.

The table has no index on `changed_at`, and needs none: rows are inserted as they
happen, so ids grow with time and the old rows are the table's first ids. A page
is read from the primary key in id order; its old rows are deleted, and the run
stops at the first page that is not entirely old. Each page therefore reads
`page_size` rows of the primary key, however large the table is.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from models import TeamStatusChange, utcnow

log = logging.getLogger("ogv.retention")

PAGE_SIZE = 5_000
MAX_PAGES = 200
"""At most a million rows a run: a first run on a large table spreads over several."""


def prune_page(session: Session, before: datetime, page_size: int = PAGE_SIZE) -> tuple[int, bool]:
    """Delete the oldest page's rows changed before `before`: (deleted, page wholly old)."""
    rows = session.execute(
        select(TeamStatusChange.id, TeamStatusChange.changed_at)
        .order_by(TeamStatusChange.id)
        .limit(page_size)
    ).all()
    old = [row_id for row_id, changed_at in rows if changed_at < before]
    if old:
        session.execute(delete(TeamStatusChange).where(TeamStatusChange.id.in_(old)))
    return len(old), bool(rows) and len(old) == len(rows)


def prune_history(
    sessions: sessionmaker[Session],
    retention_days: int,
    *,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> int:
    """Delete the history rows older than `retention_days` (0: none); how many went."""
    if retention_days <= 0:
        return 0
    before = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    for _ in range(max_pages):
        with sessions.begin() as session:
            count, more = prune_page(session, before, page_size)
        deleted += count
        if not more:
            break
    if deleted:
        log.info("history.pruned", extra={"deleted": deleted, "retention_days": retention_days})
    return deleted
