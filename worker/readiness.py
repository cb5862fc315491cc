"""Readiness for JSM Operations, as recorded: which teams' keys already work there.

Every team of an integration on an Opsgenie platform (`opsgenie`, `opsgenie-eu`)
has to move to JSM Operations before Opsgenie's end of support (2027-04-05).
`Team.jsm_ops` records what the last probe of its key on JSM Ops said:

    works     JSM Ops gave a genuine `valid`
    fails     JSM Ops gave another genuine verdict (401, 403, 422...)
    unknown   no genuine answer (transient, unrecognised, no answer); NULL: never probed

This module reads those records into the figures operators and producers see
(`ogv migration report`, `GET /v1/organizations/{org}/migration`), with each
account's own deadline (`worker.platforms.sunset`), names the integrations at
risk (`at_risk`: still on Opsgenie, with teams whose keys do not work on JSM Ops),
and writes a probe's answers. It never probes: `worker.operations.migration` does. Only teams
of active organization integrations count, the teams that re-validation checks.
Functions take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Boolean, ColumnElement, Table, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from models import Integration, IntegrationStatus, OrganizationIntegration, Team
from models.integration import JSM_FAILS, JSM_UNKNOWN, JSM_WORKS, OPSGENIE_PROVIDER
from worker.platforms import PLATFORMS, sunset
from worker.platforms.opsgenie import OPSGENIE_END_OF_SUPPORT

OPSGENIE_PLATFORMS: tuple[str, ...] = tuple(n for n, p in PLATFORMS.items() if p.is_opsgenie)
"""The platforms whose teams have to move: Opsgenie US and EU."""


@dataclass(frozen=True)
class OrganizationReadiness:
    """One organization's teams on Opsgenie platforms, by what JSM Ops said of their keys."""

    organization_id: int
    teams: int
    """Teams of its active integrations on Opsgenie (US or EU)."""
    works: int
    """Keys JSM Operations accepted (a genuine `valid`)."""
    fails: int
    """Keys JSM Operations refused (another genuine answer)."""
    unknown: int
    """Keys never probed, or whose last probe got no genuine answer."""
    days_left: int
    """Whole days (UTC) to the nearest deadline of its integrations on Opsgenie; 0 once
    passed."""
    deadline: date
    """The nearest deadline of its integrations on Opsgenie (`IntegrationReadiness`)."""


@dataclass(frozen=True)
class IntegrationReadiness:
    """One integration (account) on an Opsgenie platform, with the teams of every
    organization linked to it: `ogv integration migrate` moves it for all of them."""

    integration_id: int
    account: str
    platform: str
    teams: int
    """Teams of every active organization linked to it."""
    works: int
    """Keys JSM Operations accepted (a genuine `valid`)."""
    fails: int
    """Keys JSM Operations refused (another genuine answer)."""
    unknown: int
    """Keys never probed, or whose last probe got no genuine answer."""
    ready: bool
    """Every team works on JSM Operations: `ogv integration migrate` moves it without
    --force."""
    migrated_on: date | None
    """The day the account migrated to JSM Operations, as recorded (`ogv integration
    update`)."""
    switched_off_on: date | None
    """The day the account's Opsgenie was switched off, as recorded."""
    deadline: date
    """The earliest of Opsgenie's end of support, migration + 120 days, the switch-off."""
    deadline_reason: str
    """Which of the three it is: `end_of_support`, `migrated` or `switched_off`."""
    days_left: int
    """Whole days (UTC) to the deadline; 0 once passed."""


@dataclass(frozen=True)
class Probed:
    """What one `ogv migration report` run asked JSM Ops, and what it answered."""

    teams: int = 0
    """Teams asked about."""
    works: int = 0
    """Keys JSM Operations accepted (a genuine `valid`)."""
    fails: int = 0
    """Keys JSM Operations refused (another genuine answer)."""
    unknown: int = 0
    """Keys never probed, or whose last probe got no genuine answer."""


@dataclass(frozen=True)
class MigrationReport:
    """Readiness for JSM Operations, as the last probes recorded it: the figures of `ogv
    migration report` and `GET /v1/organizations/{org}/migration` (`OGV_MIGRATION_PROBE=on`
    adds a probe to checks)."""

    end_of_support: date
    days_left: int
    """Whole days (UTC) until Opsgenie's end of support; 0 once passed."""
    organizations: list[OrganizationReadiness]
    integrations: list[IntegrationReadiness]
    """Integrations on Opsgenie platforms (the organization's, in the API), by id, each
    counting the teams of every organization linked to it."""
    probed: Probed | None = None
    """`ogv migration report --json` only: this run's probes (the API reads what is
    recorded)."""

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON shape (`MigrationReport` in the OpenAPI document)."""
        shown: dict[str, Any] = _dates_as_text(asdict(self))
        if self.probed is None:
            del shown["probed"]
        return shown


def _dates_as_text(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {name: _dates_as_text(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_dates_as_text(item) for item in value]
    return value


class Readiness(NamedTuple):
    """One probe's answer about one team's key, as `record` writes it."""

    team_id: str
    key_version: int
    """The key that was probed: an answer about a replaced key (or a moved team) is dropped."""
    jsm_ops: str


def days_left(today: date | None = None) -> int:
    """Whole days from `today` (UTC) to Opsgenie's end of support; 0 once it has passed."""
    return sunset.deadline().days_left(today)


def deadline_of(row: Any) -> sunset.Deadline:
    """The deadline of an integration row (with `migrated_on` and `switched_off_on`)."""
    return sunset.deadline(row.migrated_on, row.switched_off_on)


def in_scope(organization_id: int | None = None) -> list[ColumnElement[bool]]:
    """The teams that have to move: of active links, to integrations on Opsgenie platforms.

    For a query over teams joined to their organization integration and integration.
    """
    scope = [
        OrganizationIntegration.status == IntegrationStatus.ACTIVE,
        Integration.provider == OPSGENIE_PROVIDER,
        Integration.platform.in_(OPSGENIE_PLATFORMS),
    ]
    if organization_id is not None:
        scope.append(OrganizationIntegration.organization_id == organization_id)
    return scope


def _counts() -> tuple[Any, ...]:
    """Teams, and how many of them JSM Ops said work and fail: `teams`, `works`, `fails`."""
    return (
        func.count(Team.id).label("teams"),
        func.coalesce(func.sum(case((Team.jsm_ops == JSM_WORKS, 1), else_=0)), 0).label("works"),
        func.coalesce(func.sum(case((Team.jsm_ops == JSM_FAILS, 1), else_=0)), 0).label("fails"),
    )


def _joined(*columns: Any) -> Any:
    return (
        select(*columns)
        .select_from(Team)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
    )


def report(
    session: Session, organization_id: int | None = None, today: date | None = None
) -> MigrationReport:
    """The recorded readiness of every organization (or one), and of their integrations.

    Organizations are listed by id, those with teams on Opsgenie platforms; one
    asked for by id is listed even with none (all zeros, and the common deadline).
    An organization's deadline is the nearest of its integrations'. Integrations
    are those the organizations use, each with the teams of every organization
    linked to it, and its own deadline.
    """
    today = today or sunset.today()
    rows = session.execute(
        _joined(
            OrganizationIntegration.organization_id,
            Integration.migrated_on,
            Integration.switched_off_on,
            *_counts(),
        )
        .where(*in_scope(organization_id))
        .group_by(
            OrganizationIntegration.organization_id,
            Integration.id,
            Integration.migrated_on,
            Integration.switched_off_on,
        )
        .order_by(OrganizationIntegration.organization_id)
    ).all()
    common = sunset.deadline()
    organizations = []
    for org in dict.fromkeys(row.organization_id for row in rows):
        mine = [row for row in rows if row.organization_id == org]
        nearest = min((deadline_of(row) for row in mine), key=lambda d: d.on)
        teams, works, fails = (sum(getattr(r, name) for r in mine) for name in _FIGURES)
        organizations.append(
            OrganizationReadiness(
                org,
                teams,
                works,
                fails,
                teams - works - fails,
                nearest.days_left(today),
                nearest.on,
            )
        )
    if organization_id is not None and not organizations:
        organizations = [
            OrganizationReadiness(organization_id, 0, 0, 0, 0, common.days_left(today), common.on)
        ]
    return MigrationReport(
        OPSGENIE_END_OF_SUPPORT,
        common.days_left(today),
        organizations,
        integrations(session, organization_id, today),
    )


_FIGURES = ("teams", "works", "fails")


def integrations(
    session: Session, organization_id: int | None = None, today: date | None = None
) -> list[IntegrationReadiness]:
    """Readiness per integration on an Opsgenie platform, by id (of one organization's,
    if given), counting the teams of every organization linked to it."""
    columns = (
        Integration.id,
        Integration.account_name,
        Integration.platform,
        Integration.migrated_on,
        Integration.switched_off_on,
    )
    query = _joined(*columns, *_counts()).where(*in_scope())
    if organization_id is not None:
        used = select(OrganizationIntegration.integration_id).where(
            OrganizationIntegration.organization_id == organization_id,
            OrganizationIntegration.status == IntegrationStatus.ACTIVE,
        )
        query = query.where(Integration.id.in_(used))
    rows = session.execute(query.group_by(*columns).order_by(Integration.id))
    today = today or sunset.today()
    return [_integration(row, today) for row in rows]


def _integration(row: Any, today: date) -> IntegrationReadiness:
    deadline = deadline_of(row)
    return IntegrationReadiness(
        integration_id=row.id,
        account=row.account_name,
        platform=row.platform,
        teams=row.teams,
        works=row.works,
        fails=row.fails,
        unknown=row.teams - row.works - row.fails,
        ready=row.works == row.teams,
        migrated_on=row.migrated_on,
        switched_off_on=row.switched_off_on,
        deadline=deadline.on,
        deadline_reason=deadline.reason,
        days_left=deadline.days_left(today),
    )


@dataclass(frozen=True)
class AtRisk:
    """An integration still on Opsgenie, with teams whose keys do not work on JSM Ops
    (as last probed), as one organization linked to it sees it."""

    organization_id: int
    integration_id: int
    platform: str
    teams: int
    """The organization's teams of the integration whose key is not known to work there."""
    deadline: date
    deadline_reason: str
    days_left: int


def at_risk(
    session: Session,
    today: date | None = None,
    *,
    within: int | None = None,
    organization_id: int | None = None,
) -> list[AtRisk]:
    """Every (organization, integration) at risk, nearest deadline first; with `within`,
    only those with at most that many days left."""
    today = today or sunset.today()
    columns = (
        OrganizationIntegration.organization_id,
        Integration.id,
        Integration.platform,
        Integration.migrated_on,
        Integration.switched_off_on,
    )
    rows = session.execute(
        _joined(*columns, func.count(Team.id).label("teams"))
        .where(*in_scope(organization_id), or_(Team.jsm_ops.is_(None), Team.jsm_ops != JSM_WORKS))
        .group_by(*columns)
    )
    found = []
    for row in rows:
        deadline = deadline_of(row)
        left = deadline.days_left(today)
        if within is None or left <= within:
            found.append(
                AtRisk(
                    row.organization_id,
                    row.id,
                    row.platform,
                    row.teams,
                    deadline.on,
                    deadline.reason,
                    left,
                )
            )
    return sorted(
        found, key=lambda risk: (risk.days_left, risk.organization_id, risk.integration_id)
    )


def of_integration(session: Session, integration_id: int) -> tuple[int, int]:
    """(teams, teams whose key works on JSM Ops) of one integration, every organization's."""
    teams, works, _ = session.execute(
        _joined(*_counts()).where(
            Integration.id == integration_id,
            OrganizationIntegration.status == IntegrationStatus.ACTIVE,
        )
    ).one()
    return int(teams), int(works)


_TEAMS = cast(Table, Team.__table__)
# An answer applies only to the key it was about (`key_version`); `unknown` says
# nothing new about a key JSM Ops has judged before, so it only fills a gap.
_RECORD = (
    update(_TEAMS)
    .where(
        _TEAMS.c.id == bindparam("b_team"),
        _TEAMS.c.key_version == bindparam("b_version"),
        or_(
            bindparam("b_verdict", type_=Boolean),
            _TEAMS.c.jsm_ops.is_(None),
            _TEAMS.c.jsm_ops == JSM_UNKNOWN,
        ),
    )
    .values(jsm_ops=bindparam("b_jsm_ops"), jsm_ops_checked_at=bindparam("b_at"))
)


def record(session: Session, answers: Sequence[Readiness], checked_at: datetime) -> None:
    """Write probe answers to their teams: one executemany, in team id order.

    A genuine answer (`works`, `fails`) replaces what was recorded; `unknown` is
    written only where nothing better is known. An answer about a key that was
    replaced since, or a team moved since (`key_version` grew), is dropped.
    """
    if not answers:
        return
    rows = [
        {
            "b_team": answer.team_id,
            "b_version": answer.key_version,
            "b_verdict": answer.jsm_ops != JSM_UNKNOWN,
            "b_jsm_ops": answer.jsm_ops,
            "b_at": checked_at,
        }
        for answer in sorted(answers, key=lambda answer: answer.team_id)
    ]
    session.connection().execute(_RECORD, rows)


__all__ = [
    "OPSGENIE_PLATFORMS",
    "AtRisk",
    "IntegrationReadiness",
    "MigrationReport",
    "OrganizationReadiness",
    "Probed",
    "Readiness",
    "at_risk",
    "days_left",
    "deadline_of",
    "in_scope",
    "integrations",
    "of_integration",
    "record",
    "report",
]
