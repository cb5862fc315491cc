"""How long the service keeps what it writes: beat's `ogv.prune_history` and
`ogv.prune_audit`, and `ogv db prune`.

Each retention deletes a page at a time, each page in its own short transaction,
so that a page costs the same however large its table is.

**Status history and audit log** (`OGV_HISTORY_RETENTION_DAYS`,
`OGV_AUDIT_RETENTION_DAYS`). `team_status_changes` gains a row for every change of
a team's status, `audit_events` one for every operator's action. Neither has an
index on its time column, and needs none: rows are inserted as they happen, so
ids grow with time and the old rows are the table's first ids. A page is read from
the primary key in id order; its old rows are deleted, and the run stops at the
first page that is not entirely old. Each page reads `page_size` rows of the
primary key.

**Requests** (`OGV_REQUEST_RETENTION_DAYS`). `validation_requests` gains a row per
team per run: 10M a day at 10M teams. A finished request older than the retention
is deleted unless it is still worth something:

- it is its team's latest finished request (what the team last learned);
- a status change, or a change the mass-change guard holds, refers to it (the
  history points at the request that explains it);

and a request still open (pending, running, confirming) is never finished, so never
a candidate. A page is a range scan of `ix_validation_requests_finished` (the
finished rows in (finished_at, id) order) from where the last page stopped, each
candidate checked by index probes (the history's unique `request_id`,
`held_changes.request_id`, and the team's latest in
`ix_validation_requests_team_finished`); the DELETE reads the same range again.
Kept rows stay behind the walk's cursor (`retention_marks`), so a run steps over
them once per pass, not once per page; a pass that reaches the cut-off records it
as `pruned_before` and starts again from the oldest row, where rows kept before
may have become prunable since.

A request id made after revision 0009 carries its creation time (`models.ids`), so
the API tells an id pruned by a finished pass (410 `expired`) from one never made
(404).

An audit event names its target in free text and refers to no request, so none
keeps one.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, and_, delete, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, sessionmaker
from sqlalchemy.sql.dml import ReturningDelete

from models import (
    AuditEvent,
    HeldChange,
    RetentionMark,
    TeamStatusChange,
    ValidationRequest,
    utcnow,
)
from models.validation import REQUESTS_RETENTION as REQUESTS

log = logging.getLogger("ogv.retention")

PAGE_SIZE = 5_000
MAX_PAGES = 200
"""At most a million rows a run: a first run on a large table spreads over several."""

_REQUESTS = cast(Table, ValidationRequest.__table__)


@dataclass(frozen=True)
class Pruned:
    """What one run of every retention deleted."""

    requests: int
    history: int
    audit: int

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "history": self.history, "audit": self.audit}


def prune_everything(
    sessions: sessionmaker[Session],
    *,
    request_retention_days: int,
    history_retention_days: int,
    audit_retention_days: int,
    now: datetime | None = None,
    max_pages: int = MAX_PAGES,
) -> Pruned:
    """Run every retention once: beat's task and `ogv db prune`."""
    now = now or utcnow()
    return Pruned(
        requests=prune_requests(sessions, request_retention_days, now=now, max_pages=max_pages),
        history=prune_history(sessions, history_retention_days, now=now, max_pages=max_pages),
        audit=prune_audit(sessions, audit_retention_days, now=now, max_pages=max_pages),
    )


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


Cursor = tuple[datetime, uuid.UUID]
"""A place in the walk: a finished request's (finished_at, id)."""


def page_of_requests(
    cursor: Cursor | None, before: datetime, page_size: int
) -> Select[tuple[datetime, uuid.UUID]]:
    """The next page of finished requests older than `before`, after `cursor`, in
    (finished_at, id) order: a range scan of `ix_validation_requests_finished`."""
    columns = _REQUESTS.c
    return (
        select(columns.finished_at, columns.id)
        .where(_in_range(cursor, None, before))
        .order_by(columns.finished_at, columns.id)
        .limit(page_size)
    )


def _in_range(after: Cursor | None, upto: Cursor | None, before: datetime) -> ColumnElement[bool]:
    """Finished before `before`, after `after` and up to `upto` in the walk's order.

    The bounds on `finished_at` alone say again what the row comparisons say: the
    planner estimates them from its statistics, and so knows the range is small."""
    columns = _REQUESTS.c
    place = tuple_(columns.finished_at, columns.id)
    bounds: list[ColumnElement[bool]] = [
        columns.finished_at.is_not(None),
        columns.finished_at < before,
    ]
    if after is not None:
        bounds += [columns.finished_at >= after[0], place > tuple_(*after)]
    if upto is not None:
        bounds += [columns.finished_at <= upto[0], place <= tuple_(*upto)]
    return and_(*bounds)


def unkept(
    after: Cursor | None, upto: Cursor, before: datetime
) -> ReturningDelete[tuple[uuid.UUID]]:
    """The DELETE of the page's requests (after `after`, up to `upto`) that nothing
    keeps, returning their ids.

    The page is the same range of `ix_validation_requests_finished` again, and each
    of its rows costs one probe of each index that may keep it. The probes are
    scalar subqueries on purpose: PostgreSQL runs them once per row, where an EXISTS
    may become a join that reads the whole of a large table.
    """
    row = _REQUESTS.c
    newer = aliased(ValidationRequest)
    later_of_its_team = (
        select(newer.id)
        .where(
            newer.organization_id == row.organization_id,
            newer.integration_id == row.integration_id,
            newer.team_id == row.team_id,
            newer.finished_at.is_not(None),
            newer.finished_at > row.finished_at,
        )
        .limit(1)
        .scalar_subquery()
    )
    referring = [
        select(column).where(column == row.id).limit(1).scalar_subquery()
        for column in (TeamStatusChange.request_id, HeldChange.request_id)
    ]
    return (
        delete(_REQUESTS)
        .where(
            _in_range(after, upto, before),
            later_of_its_team.is_not(None),  # not its team's latest finished request...
            *(reference.is_(None) for reference in referring),  # ... nor referred to
        )
        .returning(row.id)
    )


def prune_requests_page(
    session: Session, before: datetime, page_size: int = PAGE_SIZE
) -> tuple[int, bool]:
    """Walk one page from the retention's cursor: (deleted, the pass reached `before`).

    The mark's row is locked for the page, so two runs at once take turns.
    """
    mark = session.get(RetentionMark, REQUESTS, with_for_update=True)
    if mark is None:
        mark = RetentionMark(name=REQUESTS, updated_at=utcnow())
        session.add(mark)
        session.flush()
    cursor = cursor_of(mark)
    rows = session.execute(page_of_requests(cursor, before, page_size)).all()
    deleted = 0
    if rows:
        upto = (rows[-1].finished_at, rows[-1].id)
        deleted = len(session.scalars(unkept(cursor, upto, before)).all())
        mark.cursor_finished_at, mark.cursor_id = upto
    done = len(rows) < page_size
    if done:
        # The pass is over: every prunable row finished before `before` is gone.
        mark.cursor_finished_at, mark.cursor_id, mark.pruned_before = None, None, before
    mark.updated_at = utcnow()
    return deleted, done


def cursor_of(mark: RetentionMark | None) -> Cursor | None:
    """Where the walk goes on from (None: from the oldest row)."""
    if mark is None or mark.cursor_finished_at is None or mark.cursor_id is None:
        return None
    return mark.cursor_finished_at, mark.cursor_id


def prune_requests(
    sessions: sessionmaker[Session],
    retention_days: int,
    *,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> int:
    """Delete the finished requests older than `retention_days` (0: none) that nothing
    keeps, up to `max_pages` pages; how many went."""
    if retention_days <= 0:
        return 0
    before = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    for _ in range(max_pages):
        with sessions.begin() as session:
            count, done = prune_requests_page(session, before, page_size)
        deleted += count
        if done:
            break
    if deleted:
        log.info("requests.pruned", extra={"deleted": deleted, "retention_days": retention_days})
    return deleted
