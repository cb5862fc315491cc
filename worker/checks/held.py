"""The changes the mass-change guard holds: what operators read, release and discard.

Once the guard of a base URL trips (worker/checks/guard.py), a confirmed change
from `valid` to a failing status is kept in `held_changes` instead of being
written, and the team keeps `valid`. An operator then decides, per base URL or team:

- **release**: write each held change as the check would have written it, through
  the status history (`team_status_changes`, and so the webhook and its outbox),
  provided the team still holds the key that was checked and still has the status
  the change starts from; a change gone stale is dropped and counted;
- **discard**: drop the held changes and check those teams again now.

Meanwhile beat checks held teams again every OGV_GUARD_RECHECK seconds
(`claim_rechecks`, worker/periodic/recheck.py); a check that finds the key valid
drops the held change by itself (worker/checks/records.py).

Functions take a session and never commit. Asking for the re-checks themselves is
the scheduler's (`check_again`, worker/periodic/recheck.py).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Row, Select, delete, func, select, update
from sqlalchemy.orm import Session

from models import (
    HeldChange,
    Integration,
    OrganizationIntegration,
    Team,
    ValidationRequest,
    utcnow,
)
from models.db import one_of
from worker import audit, cursors
from worker.checks import guard

if TYPE_CHECKING:
    from worker.checks.records import StatusChange
    from worker.checks.requests import Ask

# `ogv status` and `ogv health` read the guard through this module: what writes and
# asks for checks (records, requests, enqueue, and through them aiohttp, Redis and
# Celery) is imported by the functions that do.

log = logging.getLogger("ogv.held")


DEFAULT_PAGE = cursors.DEFAULT_PAGE
MAX_PAGE = cursors.MAX_PAGE
AUDITED_TEAMS = 100
"""Team ids an audit event of a release or discard names at most (it counts them all)."""


@dataclass(frozen=True)
class Selection:
    """Which held changes an operator names: those of a base URL, of some teams, or
    both; every one when neither is given."""

    base_url: str | None = None
    team_ids: tuple[str, ...] = ()

    def where(self) -> list[ColumnElement[bool]]:
        clauses = []
        if self.base_url is not None:
            clauses.append(HeldChange.base_url == self.base_url)
        if self.team_ids:
            clauses.append(HeldChange.team_id.in_(self.team_ids))
        return clauses


@dataclass(frozen=True)
class HeldRow:
    """A held change as operators read it: its team, where it was checked, and the
    evidence (never the key)."""

    team_id: str
    label: str
    organization_id: int
    integration_id: int
    account: str
    base_url: str
    old_status: str
    new_status: str
    http_status: int | None
    error_code: str | None
    message: str | None
    held_at: datetime
    rechecked_at: datetime | None


@dataclass(frozen=True)
class HeldPage:
    """Up to `limit` held changes by team id, and the cursor of the next page (or None)."""

    held: list[HeldRow]
    next_cursor: str | None


@dataclass(frozen=True)
class AccountHeld:
    """How many changes the guard holds for one account at one base URL."""

    account: str
    base_url: str
    held: int


@dataclass(frozen=True)
class BaseUrlGuard(guard.GuardState):
    """One base URL's guard and the changes it holds, as `ogv changes list` and
    `GET /v1/guard` show it."""

    held: int = 0


def _held_rows() -> Select[HeldChange, str, OrganizationIntegration, str]:
    return (
        select(HeldChange, Team.label, OrganizationIntegration, Integration.account_name)
        .join(Team, Team.id == HeldChange.team_id)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
    )


def _row(held: HeldChange, label: str, link: OrganizationIntegration, account: str) -> HeldRow:
    return HeldRow(
        team_id=held.team_id,
        label=label,
        organization_id=link.organization_id,
        integration_id=link.integration_id,
        account=account,
        base_url=held.base_url,
        old_status=held.old_status.value,
        new_status=held.new_status.value,
        http_status=held.http_status,
        error_code=held.error_code,
        message=held.message,
        held_at=held.held_at,
        rechecked_at=held.rechecked_at,
    )


def list_held(session: Session, selection: Selection = Selection()) -> list[HeldRow]:
    """Every held change named by `selection`, by team id."""
    query = _held_rows().where(*selection.where()).order_by(HeldChange.team_id)
    return [_row(*row) for row in session.execute(query)]


def held_page(
    session: Session,
    base_url: str | None = None,
    *,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    organizations: frozenset[int] | None = None,
) -> HeldPage:
    """One page of the held changes (of one base URL, of some organizations), by team
    id; a cursor as the teams' pages use it (`worker.cursors.decode_cursor`)."""
    query = _held_rows().where(*Selection(base_url).where())
    if organizations is not None:
        query = query.where(OrganizationIntegration.organization_id.in_(organizations))
    if cursor is not None:
        query = query.where(HeldChange.team_id > cursors.decode_cursor(cursor))
    found = [
        _row(*row) for row in session.execute(query.order_by(HeldChange.team_id).limit(limit + 1))
    ]
    page = found[:limit]
    more = len(found) > limit
    return HeldPage(page, cursors.encode_cursor(page[-1].team_id) if more else None)


def held_counts(session: Session) -> dict[str, int]:
    """Held changes per base URL."""
    query = select(HeldChange.base_url, func.count()).group_by(HeldChange.base_url)
    return {base_url: count for base_url, count in session.execute(query)}


def held_of_run(session: Session, run_id: uuid.UUID) -> dict[str, int]:
    """How many of a run's verdicts are held now, by the outcome its request ended with."""
    query = (
        select(ValidationRequest.outcome, func.count())
        .join(HeldChange, HeldChange.request_id == ValidationRequest.id)
        .where(ValidationRequest.run_id == run_id)
        .group_by(ValidationRequest.outcome)
    )
    return {outcome.value: count for outcome, count in session.execute(query) if outcome}


def held_by_account(session: Session, selection: Selection = Selection()) -> list[AccountHeld]:
    """Held changes per account and base URL (of those `selection` names), most first."""
    query = (
        select(HeldChange.account, HeldChange.base_url, func.count())
        .where(*selection.where())
        .group_by(HeldChange.account, HeldChange.base_url)
    )
    found = [AccountHeld(*row) for row in session.execute(query)]
    return sorted(found, key=lambda a: (-a.held, a.account, a.base_url))


def guard_report(
    session: Session, windows: guard.Windows, thresholds: guard.Thresholds
) -> list[BaseUrlGuard]:
    """Every base URL the guard counted or holds changes of; tripped ones first."""
    held = held_counts(session)
    states = {s.base_url: s for s in guard.states(windows, session.connection(), thresholds)}
    found = []
    for base_url in sorted(set(states) | set(held)):
        state = states.get(base_url) or guard.GuardState(base_url, False, None, 0, 0, 0, 0)
        found.append(BaseUrlGuard(**dataclasses.asdict(state), held=held.get(base_url, 0)))
    return sorted(found, key=lambda g: (not g.tripped, g.base_url))


def describe_tripped(tripped: Sequence[BaseUrlGuard]) -> str:
    """One line about the base URLs whose guard is tripped, for `ogv status` and health."""
    return "; ".join(
        f"tripped for {g.base_url}"
        + (f" since {g.tripped_at:%Y-%m-%d %H:%M:%S} UTC" if g.tripped_at else "")
        + f"; {g.held} changes held"
        for g in tripped
        if g.tripped
    )


@dataclass(frozen=True)
class Released:
    """What `release` wrote: the status changes, and the held changes dropped as stale."""

    changes: list[StatusChange]
    dropped: int


def release(session: Session, selection: Selection) -> Released:
    """Write the held changes named by `selection` to their teams and the history.

    A team is locked before its held change (the order the workers lock them in),
    and the change is written only if the team still holds the key that was checked
    (`key_version`) and still has the status the change starts from; otherwise it is
    dropped. Either way the held row is deleted. The history rows keep the held
    check's request id, so the webhook document and its outbox work as for any change.
    """
    named = list(session.scalars(select(HeldChange.team_id).where(*selection.where())))
    if not named:
        return Released([], 0)
    locked = {
        row.id: row
        for row in session.execute(
            select(Team.id, Team.key_version, Team.status)
            .where(one_of(session, Team.id, named))
            .order_by(Team.id)
            .with_for_update()
        )
    }
    held = session.scalars(
        select(HeldChange)
        .where(one_of(session, HeldChange.team_id, locked), *selection.where())
        .order_by(HeldChange.team_id)
        .with_for_update()
    ).all()
    now = utcnow()
    fresh = [
        h
        for h in held
        if locked[h.team_id].key_version == h.key_version
        and locked[h.team_id].status is h.old_status
    ]
    for change in fresh:
        session.execute(
            update(Team)
            .where(Team.id == change.team_id)
            .values(
                status=change.new_status,
                status_changed_at=now,
                last_error_code=change.error_code,
                last_http_status=change.http_status,
            )
        )
    written = _insert_changes(session, fresh, now)
    session.execute(delete(HeldChange).where(one_of(session, HeldChange.id, [h.id for h in held])))
    return Released(written, len(held) - len(fresh))


def _insert_changes(
    session: Session, held: Sequence[HeldChange], now: datetime
) -> list[StatusChange]:
    from worker.checks.records import insert_changes

    rows = [
        {
            "team_id": h.team_id,
            "request_id": h.request_id,
            "old_status": h.old_status,
            "new_status": h.new_status,
            "changed_at": now,
        }
        for h in held
    ]
    return insert_changes(session.connection(), rows)


def release_audited(session: Session, selection: Selection, actor: str) -> Released:
    """`release`, and a `changes.release` audit event by `actor` per organization whose
    changes were written (one without an organization when none was: the operator still
    acted), in `session`'s transaction: what `ogv changes release` and the console's
    button do."""
    released = release(session, selection)
    teams = [change.team_id for change in released.changes]
    organization_of = dict(
        session.execute(
            select(Team.id, OrganizationIntegration.organization_id)
            .join(
                OrganizationIntegration,
                Team.organization_integration_id == OrganizationIntegration.id,
            )
            .where(one_of(session, Team.id, teams))
        ).all()
    )
    _audit_per_organization(
        session,
        actor,
        "changes.release",
        selection,
        [(organization_of.get(team_id), team_id) for team_id in teams],
        "released",
        even_if_none=True,
        dropped=released.dropped,
    )
    return released


def discard_audited(session: Session, selection: Selection, actor: str) -> list[Ask]:
    """`discard`, and a `changes.discard` audit event by `actor` per organization, in
    `session`'s transaction: what `ogv changes discard` and the console's button do."""
    asks = discard(session, selection)
    _audit_per_organization(
        session,
        actor,
        "changes.discard",
        selection,
        [(ask.organization_id, ask.team_id) for ask in asks],
        "discarded",
    )
    return asks


def _audit_per_organization(
    session: Session,
    actor: str,
    action: str,
    selection: Selection,
    teams: Sequence[tuple[int | None, str]],
    counted: str,
    *,
    even_if_none: bool = False,
    **details: int,
) -> None:
    """One `action` event per organization of `teams` ((organization, team id) pairs),
    each in that organization's log, with its count under `counted`, its first teams
    and `details`; with `even_if_none`, one without an organization when `teams` is
    empty."""
    by_organization: dict[int | None, list[str]] = {None: []} if even_if_none and not teams else {}
    for organization_id, team_id in teams:
        by_organization.setdefault(organization_id, []).append(team_id)
    for organization_id, named in by_organization.items():
        audit.record(
            session,
            actor,
            action,
            organization_id=organization_id,
            target=audit_target(selection),
            details={counted: len(named), **details, "teams": named[:AUDITED_TEAMS]},
        )


def audit_target(selection: Selection) -> str:
    """What an operator named, for the audit log: a base URL, teams, or everything."""
    if selection.base_url is not None:
        return selection.base_url
    return f"{len(selection.team_ids)} teams" if selection.team_ids else "all"


def log_released(changes: Sequence[StatusChange]) -> None:
    """The `team.status_changed` line of each released change, as the pipeline logs one."""
    from worker.checks.events import log_change

    for change in changes:
        log_change(change, released=True)


def discard(session: Session, selection: Selection) -> list[Ask]:
    """Delete the held changes named by `selection`; what to check again, one ask per team."""
    found = session.execute(_asks().where(*selection.where()).order_by(HeldChange.team_id)).all()
    if found:
        session.execute(
            delete(HeldChange).where(one_of(session, HeldChange.id, [row.id for row in found]))
        )
    return _asks_of(found)


def claim_rechecks(session: Session, before: datetime, limit: int) -> list[Ask]:
    """Mark up to `limit` held changes last checked (or held) before `before` as
    re-checked now, oldest first; the asks that check their teams again."""
    last = func.coalesce(HeldChange.rechecked_at, HeldChange.held_at)
    found = session.execute(
        _asks().where(last < before).order_by(last, HeldChange.team_id).limit(limit)
    ).all()
    if found:
        session.execute(
            update(HeldChange)
            .where(one_of(session, HeldChange.id, [row.id for row in found]))
            .values(rechecked_at=utcnow())
        )
    return _asks_of(found)


def _asks() -> Select[int, str, int, int]:
    return (
        select(
            HeldChange.id,
            HeldChange.team_id,
            OrganizationIntegration.organization_id,
            OrganizationIntegration.integration_id,
        )
        .join(Team, Team.id == HeldChange.team_id)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
    )


def _asks_of(rows: Sequence[Row[int, str, int, int]]) -> list[Ask]:
    from worker.checks.requests import Ask

    return [Ask(row.organization_id, row.integration_id, row.team_id) for row in rows]
