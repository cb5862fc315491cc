"""What the console reads: each a function that takes a session, bounded at any size.

Counts come from GROUP BY over indexed columns: teams by (organization integration,
status) through `ix_teams_link_status`, read in index order and joined to the few
organization integrations afterwards; status changes per day through
`team_status_changes.changed_at`, over the days shown only. Lists are keyset pages
(`limit` + 1 rows, then a cursor), so a page costs the same however deep it is.
Nothing here selects a key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session, defer

from models import Integration, OrganizationIntegration, Team, TeamStatus, TeamStatusChange
from worker.checks.advice import team_hint
from worker.cursors import BadCursor, decode_cursor, encode_cursor
from worker.platforms.hints import Hint

FAILING = (TeamStatus.INVALID_KEY, TeamStatus.KEY_LACKS_ACCESS, TeamStatus.REJECTED)
"""The statuses that say a key no longer works."""
ORGANIZATIONS_PAGE = 20
CHANGES_PAGE = 20
TEAMS_PAGE = 50
INTEGRATIONS_MAX = 200
"""An organization's integrations shown at most (an organization has a handful)."""
CHART_DAYS = 30
_NUMBER = re.compile(r"[0-9]{1,18}")


def _per_link() -> Any:
    """Teams per organization integration and status: the index, grouped in order."""
    return (
        select(
            Team.organization_integration_id.label("link"),
            Team.status.label("status"),
            func.count().label("teams"),
        )
        .group_by(Team.organization_integration_id, Team.status)
        .subquery()
    )


def _by_status(rows: Sequence[Any]) -> dict[str, int]:
    found = {status.value: 0 for status in TeamStatus}
    for status, count in rows:
        found[TeamStatus(status).value] += int(count)
    return found


# -- the fleet ---------------------------------------------------------------------------


def status_counts(session: Session) -> dict[str, int]:
    """Teams per status, every status named."""
    rows = session.execute(select(Team.status, func.count()).group_by(Team.status)).all()
    return _by_status(rows)


def platform_counts(session: Session) -> dict[str, dict[str, int]]:
    """Teams per platform and status, by platform."""
    per_link = _per_link()
    rows = session.execute(
        select(Integration.platform, per_link.c.status, func.sum(per_link.c.teams))
        .select_from(per_link)
        .join(OrganizationIntegration, OrganizationIntegration.id == per_link.c.link)
        .join(Integration, Integration.id == OrganizationIntegration.integration_id)
        .group_by(Integration.platform, per_link.c.status)
    ).all()
    found: dict[str, list[Any]] = {}
    for platform, status, count in rows:
        found.setdefault(platform, []).append((status, count))
    return {platform: _by_status(found[platform]) for platform in sorted(found)}


@dataclass(frozen=True)
class OrganizationCounts:
    """One organization's teams: how many, how many failing, and per status."""

    organization_id: int
    teams: int
    failing: int
    statuses: dict[str, int]


@dataclass(frozen=True)
class OrganizationsPage:
    organizations: list[OrganizationCounts]
    next_cursor: str | None


def organizations_page(
    session: Session, *, limit: int = ORGANIZATIONS_PAGE, cursor: str | None = None
) -> OrganizationsPage:
    """Organizations by failing teams, most first (then by id), a page at a time; the
    cursor names the last one shown (`BadCursor` if it names nothing)."""
    per_link = _per_link()
    per_status = [
        func.sum(case((per_link.c.status == status, per_link.c.teams), else_=0)).label(status.value)
        for status in TeamStatus
    ]
    failing = func.sum(case((per_link.c.status.in_(FAILING), per_link.c.teams), else_=0))
    per_org = (
        select(
            OrganizationIntegration.organization_id.label("org"),
            func.sum(per_link.c.teams).label("teams"),
            failing.label("failing"),
            *per_status,
        )
        .select_from(per_link)
        .join(OrganizationIntegration, OrganizationIntegration.id == per_link.c.link)
        .group_by(OrganizationIntegration.organization_id)
        .subquery()
    )
    query = select(per_org)
    if cursor is not None:
        last_failing, last_org = _organization_place(cursor)
        query = query.where(
            or_(
                per_org.c.failing < last_failing,
                and_(per_org.c.failing == last_failing, per_org.c.org > last_org),
            )
        )
    rows = session.execute(
        query.order_by(per_org.c.failing.desc(), per_org.c.org).limit(limit + 1)
    ).all()
    shown = [
        OrganizationCounts(
            organization_id=row.org,
            teams=int(row.teams),
            failing=int(row.failing),
            statuses={status.value: int(getattr(row, status.value)) for status in TeamStatus},
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    last = shown[-1] if shown else None
    return OrganizationsPage(
        shown,
        encode_cursor(f"{last.failing}:{last.organization_id}") if more and last else None,
    )


def _number(text: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise BadCursor("that page link is not one the console gave out")
    return int(text)


def _organization_place(cursor: str) -> tuple[int, int]:
    failing, _, org = decode_cursor(cursor).partition(":")
    return _number(failing), _number(org)


@dataclass(frozen=True)
class Day:
    """Status changes on one day (UTC), by the status they changed to."""

    day: date
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.changes.values())


def _day_of(session: Session, column: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)  # SQLite keeps UTC text


def changes_per_day(session: Session, today: date, days: int = CHART_DAYS) -> list[Day]:
    """The last `days` days up to `today`, each with its status changes by new status."""
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    day = _day_of(session, TeamStatusChange.changed_at)
    rows = session.execute(
        select(day, TeamStatusChange.new_status, func.count())
        .where(TeamStatusChange.changed_at >= since)
        .group_by(day, TeamStatusChange.new_status)
    ).all()
    found = {first + timedelta(days=n): Day(first + timedelta(days=n)) for n in range(days)}
    for on, status, count in rows:
        when = on if isinstance(on, date) else date.fromisoformat(str(on)[:10])
        if when in found:
            found[when].changes[TeamStatus(status).value] = int(count)
    return list(found.values())


@dataclass(frozen=True)
class Change:
    """One status change, newest first in the console."""

    id: int
    team_id: str
    organization_id: int
    old_status: str
    new_status: str
    changed_at: datetime


@dataclass(frozen=True)
class ChangesPage:
    changes: list[Change]
    next_cursor: str | None


def newest_changes(
    session: Session, *, limit: int = CHANGES_PAGE, cursor: str | None = None
) -> ChangesPage:
    """Status changes, newest first, a page at a time by id."""
    query = (
        select(
            TeamStatusChange.id,
            TeamStatusChange.team_id,
            OrganizationIntegration.organization_id,
            TeamStatusChange.old_status,
            TeamStatusChange.new_status,
            TeamStatusChange.changed_at,
        )
        .join(Team, Team.id == TeamStatusChange.team_id)
        .join(
            OrganizationIntegration, OrganizationIntegration.id == Team.organization_integration_id
        )
    )
    if cursor is not None:
        query = query.where(TeamStatusChange.id < _number(decode_cursor(cursor)))
    rows = session.execute(query.order_by(TeamStatusChange.id.desc()).limit(limit + 1)).all()
    shown = [
        Change(row.id, row.team_id, row.organization_id, row[3].value, row[4].value, row[5])
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return ChangesPage(shown, encode_cursor(str(shown[-1].id)) if more and shown else None)


# -- one organization --------------------------------------------------------------------


@dataclass(frozen=True)
class LinkedIntegration:
    """One of an organization's integrations (an account), with its teams per status."""

    integration_id: int
    account: str
    platform: str
    base_url: str
    link_status: str
    statuses: dict[str, int]


@dataclass(frozen=True)
class ConsoleTeam:
    """A team as the console lists it: never its key."""

    team_id: str
    integration_id: int
    label: str
    status: str
    last_checked_at: datetime | None
    status_changed_at: datetime | None
    last_error_code: str | None
    last_http_status: int | None
    hint: Hint | None


@dataclass(frozen=True)
class TeamsPage:
    teams: list[ConsoleTeam]
    next_cursor: str | None


def integrations_of(session: Session, organization_id: int) -> list[LinkedIntegration]:
    """The organization's integrations by id, each with its teams per status; empty
    when the organization has none (the console then says it is unknown)."""
    links = session.execute(
        select(OrganizationIntegration, Integration)
        .join(Integration, Integration.id == OrganizationIntegration.integration_id)
        .where(OrganizationIntegration.organization_id == organization_id)
        .order_by(OrganizationIntegration.integration_id)
        .limit(INTEGRATIONS_MAX)
    ).all()
    counts: dict[int, list[Any]] = {}
    if links:
        rows = session.execute(
            select(Team.organization_integration_id, Team.status, func.count())
            .where(Team.organization_integration_id.in_([link.id for link, _ in links]))
            .group_by(Team.organization_integration_id, Team.status)
        )
        for link_id, status, count in rows:
            counts.setdefault(link_id, []).append((status, count))
    return [
        LinkedIntegration(
            integration_id=integration.id,
            account=integration.account_name,
            platform=integration.platform,
            base_url=integration.base_url,
            link_status=link.status.value,
            statuses=_by_status(counts.get(link.id, [])),
        )
        for link, integration in links
    ]


def teams_of(
    session: Session,
    organization_id: int,
    *,
    status: TeamStatus | None = None,
    limit: int = TEAMS_PAGE,
    cursor: str | None = None,
    today: date | None = None,
) -> TeamsPage:
    """One page of the organization's teams by id (of one status), each with what to
    do about it (`worker.checks.advice.team_hint`)."""
    query = (
        select(Team, Integration)
        .join(
            OrganizationIntegration, OrganizationIntegration.id == Team.organization_integration_id
        )
        .join(Integration, Integration.id == OrganizationIntegration.integration_id)
        .where(OrganizationIntegration.organization_id == organization_id)
        .options(defer(Team.encrypted_key, raiseload=True))
    )
    if status is not None:
        query = query.where(Team.status == status)
    if cursor is not None:
        query = query.where(Team.id > decode_cursor(cursor))
    rows = session.execute(query.order_by(Team.id).limit(limit + 1)).all()
    shown = [
        ConsoleTeam(
            team_id=team.id,
            integration_id=integration.id,
            label=team.label,
            status=team.status.value,
            last_checked_at=team.last_checked_at,
            status_changed_at=team.status_changed_at,
            last_error_code=team.last_error_code,
            last_http_status=team.last_http_status,
            hint=team_hint(team, organization_id, integration, today),
        )
        for team, integration in rows[:limit]
    ]
    more = len(rows) > limit
    return TeamsPage(shown, encode_cursor(shown[-1].team_id) if more and shown else None)


__all__ = [
    "CHART_DAYS",
    "FAILING",
    "BadCursor",
    "Change",
    "ChangesPage",
    "ConsoleTeam",
    "Day",
    "LinkedIntegration",
    "OrganizationCounts",
    "OrganizationsPage",
    "TeamsPage",
    "changes_per_day",
    "integrations_of",
    "newest_changes",
    "organizations_page",
    "platform_counts",
    "status_counts",
    "teams_of",
]
