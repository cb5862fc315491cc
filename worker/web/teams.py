"""Reading teams for producers: one team, or an organization's teams page by page.

Pages are keyset pages ordered by team id, a cursor (`worker.cursors`) naming the
last team of the previous page. Nothing here selects the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, defer

from models import Integration, OrganizationIntegration, Team, TeamStatus
from worker.cursors import DEFAULT_PAGE, decode_cursor, encode_cursor
from worker.enqueue import RequestView
from worker.platforms import get_platform
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


@dataclass(frozen=True)
class TeamPage:
    """Up to `limit` teams, and the cursor of the next page (None on the last one)."""

    teams: list[TeamRow]
    next_cursor: str | None
    """Pass as `cursor`; null on the last page."""


@dataclass(frozen=True)
class SavedTeam:
    """A team whose key was just stored (new, or replacing the old one), and the check
    of it asked for at once: `confirming` or a verdict once it is final."""

    team: TeamRow
    validation: RequestView


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


def list_teams(session: Session, organization_id: int | None = None) -> list[TeamRow]:
    """Every team (of one organization, if given), ordered by organization and id."""
    query = _rows().order_by(OrganizationIntegration.organization_id, Team.id)
    if organization_id is not None:
        query = query.where(OrganizationIntegration.organization_id == organization_id)
    return [_row(*row) for row in session.execute(query)]
