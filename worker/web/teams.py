"""Reading teams for producers: one team, or an organization's teams page by page.

Pages are keyset pages ordered by team id: a cursor names the last team of the
previous page, so a page costs the same however deep it is and a team added or
removed meanwhile never shifts the others. A cursor is a place in that order, not a
promise that the team still exists: every well-formed cursor (`CURSOR_PATTERN`)
names one, so the OpenAPI document states all there is to know about it. Nothing
here selects the key.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, defer

from models import Integration, OrganizationIntegration, Team, TeamStatus
from worker.platforms import get_platform
from worker.settings import get_settings
from worker.web.openapi import CURSOR_MAX, CURSOR_PATTERN

MAX_PAGE = 100
DEFAULT_PAGE = 50
_CURSOR = re.compile(CURSOR_PATTERN)


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
    status: str
    status_changed_at: datetime | None
    last_checked_at: datetime | None
    last_error_code: str | None
    last_http_status: int | None
    works_on: list[str]
    jsm_ops: str | None
    jsm_ops_checked_at: datetime | None


class BadCursor(ValueError):
    """Raised when a page cursor is not unpadded base64url of 2 to `CURSOR_MAX` characters."""


@dataclass(frozen=True)
class TeamPage:
    """Up to `limit` teams, and the cursor of the next page (None on the last one)."""

    teams: list[TeamRow]
    next_cursor: str | None


def encode_cursor(team_id: str) -> str:
    return base64.urlsafe_b64encode(team_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The place in the order that `cursor` names: the team id it encodes, or BadCursor.

    A cursor this API did not give out names a place as well. Bytes that are not
    UTF-8, and a NUL (PostgreSQL refuses it in text), become U+FFFD; such a place
    sorts where no team id is, which is all a bound needs.
    """
    if not 2 <= len(cursor) <= CURSOR_MAX or not _CURSOR.fullmatch(cursor):
        raise BadCursor("the cursor must be a next_cursor this API gave out")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


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
    return TeamRow(
        team_id=team.id,
        organization_id=link.organization_id,
        integration_id=integration.id,
        account=integration.account_name,
        platform=platform.name,
        probe=platform.probe_for(integration.probe, get_settings().probe),
        label=team.label,
        status=team.status.value,
        status_changed_at=team.status_changed_at,
        last_checked_at=team.last_checked_at,
        last_error_code=team.last_error_code,
        last_http_status=team.last_http_status,
        works_on=team.works_on.split(",") if team.works_on else [],
        jsm_ops=team.jsm_ops,
        jsm_ops_checked_at=team.jsm_ops_checked_at,
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
    status: TeamStatus | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> TeamPage:
    """One page of the organization's teams, ordered by id, optionally of one status."""
    query = _rows().where(OrganizationIntegration.organization_id == organization_id)
    if status is not None:
        query = query.where(Team.status == status)
    if cursor is not None:
        query = query.where(Team.id > decode_cursor(cursor))
    rows = session.execute(query.order_by(Team.id).limit(limit + 1))
    found = [_row(team, link, integration) for team, link, integration in rows]
    teams = found[:limit]
    more = len(found) > limit
    return TeamPage(teams, encode_cursor(teams[-1].team_id) if more else None)


def list_teams(session: Session, organization_id: int | None = None) -> list[TeamRow]:
    """Every team (of one organization, if given), ordered by organization and id."""
    query = _rows().order_by(OrganizationIntegration.organization_id, Team.id)
    if organization_id is not None:
        query = query.where(OrganizationIntegration.organization_id == organization_id)
    return [_row(*row) for row in session.execute(query)]
