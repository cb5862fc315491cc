"""Reading teams for producers: one team, or an organization's teams page by page.

Pages are keyset pages ordered by team id, a cursor (`worker.cursors`) naming the
last team of the previous page; `ogv status` pages through teams in the natural order
of their labels (`natural_page`). Nothing here selects the key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnExpressionArgument, Select, func, select, tuple_
from sqlalchemy.orm import Session, defer

from models import Integration, OrganizationIntegration, Team, TeamStatus
from worker.checks.advice import deadline_of, team_hint
from worker.cursors import DEFAULT_PAGE, BadCursor, decode_cursor, encode_cursor
from worker.platforms import get_platform
from worker.platforms.hints import Hint
from worker.settings import get_settings


@dataclass(frozen=True)
class TeamRow:
    """A team as `ogv status` shows it: everything but the key."""

    team_id: str
    organization_id: int
    integration_id: int
    account: str
    platform: str
    probe: str
    label: str
    key_version: int
    """Grows by one each time the team's key is replaced; a check's result is kept only
    for the key version it checked."""
    status: str
    status_changed_at: datetime | None
    last_checked_at: datetime | None
    last_error_code: str | None
    last_http_status: int | None
    works_on: list[str]
    """Other platforms where the key works, found when it turned invalid here."""
    jsm_ops: str | None
    """Whether the key works on JSM Operations, as last probed (`ogv migration report`);
    null: never probed."""
    jsm_ops_checked_at: datetime | None
    deadline: date | None
    """The account's last day on Opsgenie: the earliest of 2027-04-05, its migration + 120
    days and its switch-off; null on JSM Operations."""
    days_left: int | None
    """Whole days (UTC) to the deadline, 0 once passed; null on JSM Operations."""
    hint: Hint | None
    """What to do about the team's key, and where (a stable code and one sentence); null
    when there is nothing to do."""


@dataclass(frozen=True)
class TeamPage:
    """Up to `limit` teams, and the cursor of the next page (None on the last one)."""

    teams: list[TeamRow]
    next_cursor: str | None
    """Pass as `cursor`; null on the last page."""


def _rows() -> Select[Team, OrganizationIntegration, Integration]:
    # The encrypted key is never loaded here, and touching it would raise.
    return (
        select(Team, OrganizationIntegration, Integration)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
        .options(defer(Team.encrypted_key, raiseload=True))
    )


def _row(team: Team, link: OrganizationIntegration, integration: Integration) -> TeamRow:
    platform = get_platform(integration.platform)
    deadline = deadline_of(integration)
    return TeamRow(
        team_id=team.id,
        organization_id=link.organization_id,
        integration_id=integration.id,
        account=integration.account_name,
        platform=platform.name,
        probe=platform.probe_for(integration.probe, get_settings().probe),
        label=team.label,
        key_version=team.key_version,
        status=team.status.value,
        status_changed_at=team.status_changed_at,
        last_checked_at=team.last_checked_at,
        last_error_code=team.last_error_code,
        last_http_status=team.last_http_status,
        works_on=team.works_on.split(",") if team.works_on else [],
        jsm_ops=team.jsm_ops,
        jsm_ops_checked_at=team.jsm_ops_checked_at,
        deadline=deadline.on if deadline else None,
        days_left=deadline.days_left() if deadline else None,
        hint=team_hint(team, link.organization_id, integration),
    )


def get_team(session: Session, team_id: str) -> TeamRow | None:
    for team, link, integration in session.execute(_rows().where(Team.id == team_id)):
        return _row(team, link, integration)
    return None


def organization_exists(session: Session, organization_id: int) -> bool:
    query = select(OrganizationIntegration.id).where(
        OrganizationIntegration.organization_id == organization_id
    )
    return session.scalars(query.limit(1)).first() is not None


def list_team_page(
    session: Session,
    organization_id: int,
    *,
    integration_id: int | None = None,
    status: TeamStatus | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> TeamPage:
    """One page of the organization's teams (of one integration, if given), ordered by
    id, optionally of one status."""
    query = _rows().where(OrganizationIntegration.organization_id == organization_id)
    if integration_id is not None:
        query = query.where(OrganizationIntegration.integration_id == integration_id)
    if status is not None:
        query = query.where(Team.status == status)
    if cursor is not None:
        query = query.where(Team.id > decode_cursor(cursor))
    rows = session.execute(query.order_by(Team.id).limit(limit + 1))
    found = [_row(team, link, integration) for team, link, integration in rows]
    teams = found[:limit]
    more = len(found) > limit
    return TeamPage(teams, encode_cursor(teams[-1].team_id) if more else None)


def count_by_status(session: Session, organization_id: int | None = None) -> dict[str, int]:
    """How many teams (of one organization, if given) have each status, every status named."""
    query = select(Team.status, func.count()).group_by(Team.status)
    if organization_id is not None:
        query = query.join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        ).where(OrganizationIntegration.organization_id == organization_id)
    found: dict[TeamStatus, int] = {status: count for status, count in session.execute(query)}
    return {status.value: found.get(status, 0) for status in TeamStatus}


# `ogv status` lists teams by organization, then by label in natural order (team-2
# before team-10): a label's trailing number compares as a number. The order is an
# SQL expression, so a page is a keyset page however many teams there are; its
# cursor carries the place of the page's last team, which Python computes the way
# the SQL does (`rtrim`/`ltrim` with a set of characters mean the same on SQLite
# and PostgreSQL as `str.rstrip`/`lstrip`).
_DIGITS = "0123456789"


def _natural_order() -> tuple[ColumnExpressionArgument[Any], ...]:
    stem = func.rtrim(Team.label, _DIGITS)
    number = func.ltrim(func.substr(Team.label, func.length(stem) + 1), "0")
    return (OrganizationIntegration.organization_id, stem, func.length(number), number, Team.id)


def _natural_place(organization_id: int, label: str, team_id: str) -> tuple[Any, ...]:
    stem = label.rstrip(_DIGITS)
    number = label[len(stem) :].lstrip("0")
    return (organization_id, stem, len(number), number, team_id)


def _encode_place(row: TeamRow) -> str:
    place = json.dumps([row.organization_id, row.label, row.team_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(place.encode()).decode().rstrip("=")


def decode_place(cursor: str) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        organization_id, label, team_id = json.loads(raw)
    except ValueError as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise BadCursor("the cursor must be a next cursor `ogv status` printed") from exc
    if not (
        isinstance(organization_id, int) and isinstance(label, str) and isinstance(team_id, str)
    ):
        raise BadCursor("the cursor must be a next cursor `ogv status` printed")
    # PostgreSQL refuses a NUL in text; no team's label or id holds one, so the
    # place stays where it was.
    label, team_id = (text.replace("\x00", "\ufffd") for text in (label, team_id))
    return _natural_place(organization_id, label, team_id)


def natural_page(
    session: Session,
    organization_id: int | None = None,
    *,
    statuses: Sequence[TeamStatus] = (),
    limit: int = DEFAULT_PAGE,
    after: str | None = None,
) -> TeamPage:
    """One page of teams (of one organization, of some statuses) by organization and
    label in natural order, after the place `after` names; BadCursor if it names none."""
    order = _natural_order()
    query = _rows()
    if organization_id is not None:
        query = query.where(OrganizationIntegration.organization_id == organization_id)
    if statuses:
        query = query.where(Team.status.in_(statuses))
    if after is not None:
        query = query.where(tuple_(*order) > tuple_(*decode_place(after)))
    found = [_row(*row) for row in session.execute(query.order_by(*order).limit(limit + 1))]
    page = found[:limit]
    return TeamPage(page, _encode_place(page[-1]) if len(found) > limit else None)
