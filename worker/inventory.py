"""Integrations and teams as rows: install, list, disable and remove an account;
store, replace and remove a team's key.

Functions take a session and never commit. Refusals are `RecordError`s whose
`code` is stable for scripts and the API. Replacing or removing a key ends the
team's open checks first (`requests.close_open`), so nothing learned about the old
key reaches the team; asking for a check of the new one is the caller's, in the
same transaction (`worker.web.client.ValidationClient.replace_key`).

Creates may carry an Idempotency-Key, kept per organization (`claim_idempotency_key`,
`settle_idempotency_key`): the same key and fields give back what was created.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Select,
    delete,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    HeldChange,
    IdempotentCreate,
    Integration,
    IntegrationStatus,
    OrganizationIntegration,
    Outcome,
    Team,
    TeamStatus,
    utcnow,
)
from models.crypto import KeyVault
from models.integration import ACCOUNT_MAX, OPSGENIE_PROVIDER
from worker.checks import requests
from worker.checks.requests import Ask, IdempotencyConflict
from worker.cursors import DEFAULT_PAGE
from worker.errors import Busy, NotFound, RecordError
from worker.platforms import (
    OPSGENIE,
    PLATFORMS,
    Platform,
    ProbeName,
    UnknownPlatform,
    get_platform,
)
from worker.platforms.baseurl import check_allowed, normalise_base_url


class DuplicateTeam(RecordError):
    """Raised when a label is already used in the organization integration."""

    code = "duplicate_team"


class PlatformChoiceError(RecordError):
    """Raised when the platform, base URL and probe given do not fit together."""

    code = "invalid_platform"


def choose_platform(
    platform_name: str | None,
    base_url: str | None,
    probe: str | None,
    base_urls: Mapping[str, str],
) -> tuple[Platform, str, ProbeName | None]:
    """The platform, base URL and probe of a new integration, from what the user gave.

    `base_urls` says where each platform is reached (its official URL, or the
    override). A base URL alone names its platform only when it is one of those;
    any other needs the platform said. No base URL means the platform's own.
    """
    if platform_name is not None:
        try:
            platform = get_platform(platform_name)
        except UnknownPlatform as exc:
            raise PlatformChoiceError(str(exc)) from exc
    elif base_url is None:
        platform = OPSGENIE
    else:
        url = normalise_base_url(base_url)
        known = [name for name, official in base_urls.items() if official == url]
        if not known:
            raise PlatformChoiceError(
                "the base URL is not one of the platforms' own; say which platform it "
                f"serves with --platform ({', '.join(PLATFORMS)})"
            )
        platform = get_platform(known[0])
    if probe is not None and probe not in platform.probes:
        raise PlatformChoiceError(
            f"{platform.title} answers only the {' and '.join(platform.probes)} probe"
            f"{'s' if len(platform.probes) > 1 else ''}, not {probe!r}"
        )
    chosen = next((p for p in platform.probes if p == probe), None)
    return platform, base_url or base_urls[platform.name], chosen


def add_integration(
    session: Session,
    *,
    organization_id: int,
    account_name: str,
    base_url: str,
    allowed_base_urls: Sequence[str],
    platform: Platform = OPSGENIE,
    probe: ProbeName | None = None,
) -> tuple[Integration, OrganizationIntegration]:
    """`install_integration`, as the integration and the organization's link to it."""
    installed = install_integration(
        session,
        organization_id=organization_id,
        account_name=account_name,
        base_url=base_url,
        allowed_base_urls=allowed_base_urls,
        platform=platform,
        probe=probe,
    )
    return installed.integration, installed.link


@dataclass(frozen=True)
class Installed:
    """An account installed for an organization; `created` when the link is new."""

    integration: Integration
    link: OrganizationIntegration
    created: bool


def install_integration(
    session: Session,
    *,
    organization_id: int,
    account_name: str,
    base_url: str,
    allowed_base_urls: Sequence[str],
    platform: Platform = OPSGENIE,
    probe: ProbeName | None = None,
) -> Installed:
    """Install an account for an organization: a row of the organization's own.

    Another organization that named the same account has its own row, which this
    never reads nor changes (an account name proves nothing, SPEC §8). Installing
    again for the same organization finds its row and enables it again; a different
    platform is refused. `probe` None leaves the probe to the
    platform's default; a probe given again for an account already installed
    replaces its probe.
    """
    url = check_allowed(base_url, allowed_base_urls)
    account = account_name.strip()
    if not account or len(account) > ACCOUNT_MAX or not account.isprintable():
        raise RecordError(f"the account name must be 1 to {ACCOUNT_MAX} printable characters")
    integration = session.scalars(
        select(Integration).where(
            Integration.organization_id == organization_id,
            Integration.provider == OPSGENIE_PROVIDER,
            Integration.account_name == account,
            Integration.base_url == url,
        )
    ).first()
    if integration is None:
        integration = Integration(
            organization_id=organization_id,
            provider=OPSGENIE_PROVIDER,
            account_name=account,
            base_url=url,
            platform=platform.name,
            probe=probe,
        )
        session.add(integration)
        session.flush()
    elif integration.platform != platform.name:
        raise PlatformChoiceError(
            f"organization {organization_id} installed account {account!r} at that base URL "
            f"on {integration.platform} (integration {integration.id}); "
            f"use `ogv integration migrate --org {organization_id} "
            f"--integration {integration.id}` to move it"
        )
    elif probe is not None:
        integration.probe = probe
    link = find_link(session, organization_id, integration.id)
    created = link is None
    if link is None:
        link = OrganizationIntegration(organization_id=organization_id, integration=integration)
        session.add(link)
    link.status = IntegrationStatus.ACTIVE
    session.flush()
    return Installed(integration, link, created)


class Unchanged(enum.Enum):
    """Leave a column as it is (`update_dates`): None would clear it."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED
DateChange = date | None | Unchanged
"""A day to record, None to clear the one recorded, or UNCHANGED."""


@dataclass(frozen=True)
class SwitchOffDates:
    """An integration's recorded migration and switch-off days, after `update_dates`."""

    integration_id: int
    organization_id: int
    platform: str
    migrated_on: date | None
    switched_off_on: date | None


def update_dates(
    session: Session,
    integration_id: int,
    *,
    migrated_on: DateChange = UNCHANGED,
    switched_off_on: DateChange = UNCHANGED,
) -> SwitchOffDates:
    """Record (or clear, with None) the days an account migrated and was switched off.

    They bring the account's deadline forward (`worker.platforms.sunset`). Refused:
    an unknown integration (`not_found`), a switch-off before the migration
    (`invalid`).
    """
    integration = session.scalars(
        select(Integration)
        .where(Integration.id == integration_id, Integration.provider == OPSGENIE_PROVIDER)
        .with_for_update()
    ).first()
    if integration is None:
        raise NotFound(f"integration {integration_id} does not exist")
    if not isinstance(migrated_on, Unchanged):
        integration.migrated_on = migrated_on
    if not isinstance(switched_off_on, Unchanged):
        integration.switched_off_on = switched_off_on
    migrated, off = integration.migrated_on, integration.switched_off_on
    if migrated is not None and off is not None and off < migrated:
        raise RecordError(
            f"the switch-off ({off.isoformat()}) cannot come before the migration "
            f"({migrated.isoformat()})"
        )
    session.flush()
    return SwitchOffDates(
        integration.id, integration.organization_id, integration.platform, migrated, off
    )


def add_team(
    session: Session,
    *,
    organization_id: int,
    integration_id: int,
    label: str,
    integration_key: str,
    vault: KeyVault,
) -> Team:
    """Store a team's key, encrypted; refuses a label already used in the link."""
    link = find_link(session, organization_id, integration_id)
    if link is None:
        raise NotFound(
            f"integration {integration_id} is not installed for organization {organization_id}"
        )
    check_label(label)
    check_key_format(integration_key)
    team = Team(
        id=Team.make_id(link.id, label),
        organization_integration_id=link.id,
        label=label,
        encrypted_key=vault.encrypt(integration_key),
    )
    try:
        with session.begin_nested():
            session.add(team)
    except IntegrityError as exc:
        raise DuplicateTeam(f"a team labelled {label!r} already exists") from exc
    return team


def find_link(
    session: Session, organization_id: int, integration_id: int
) -> OrganizationIntegration | None:
    """The organization's link to its integration `integration_id`; None when the
    integration is not the organization's."""
    return session.scalars(
        select(OrganizationIntegration)
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
        .where(
            OrganizationIntegration.organization_id == organization_id,
            OrganizationIntegration.integration_id == integration_id,
            Integration.organization_id == organization_id,
        )
    ).first()


def check_label(label: str) -> None:
    # Typed for callers, checked for the rest: a web app's client may pass anything.
    if (
        not isinstance(label, str)
        or not label
        or len(label) > 255
        or not label.isprintable()
        or label != label.strip()
    ):
        raise RecordError(
            "a team label must be 1 to 255 printable characters without surrounding spaces"
        )


KEY_MAX = 200
KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
"""An integration key as the service stores it: 1 to `KEY_MAX` visible ASCII characters
(Opsgenie's keys are UUIDs; this is what an HTTP header can carry)."""


def check_key_format(key: str) -> None:
    # The message never repeats the key: it is a secret, malformed or not.
    if (
        not isinstance(key, str)
        or not key
        or len(key) > KEY_MAX
        or not key.isascii()
        or not key.isprintable()
        or " " in key
    ):
        raise RecordError(
            f"an integration key must be 1 to {KEY_MAX} visible ASCII characters (no spaces)"
        )


# -- reading integrations ----------------------------------------------------------------


@dataclass(frozen=True)
class IntegrationView:
    """An organization's integration as the API and `ogv integration list` show it."""

    integration_id: int
    organization_id: int
    organization_integration_id: int
    """The first part of its teams' ids (`<organization_integration_id>-<label>`)."""
    account: str
    platform: str
    base_url: str
    probe: str
    """The probe its checks use: its own, or the platform's default."""
    status: str
    """`active`; or `disabled`: checks of its teams end `invalid_integration`."""
    teams: int
    created_at: datetime


@dataclass(frozen=True)
class IntegrationPage:
    """Up to `limit` integrations by id, and the cursor of the next page."""

    integrations: list[IntegrationView]
    next_cursor: str | None
    """Pass as `cursor`; null on the last page."""


def _integrations(
    organization_id: int,
) -> Select[OrganizationIntegration, Integration, int]:
    teams = (
        select(func.count(Team.id))
        .where(Team.organization_integration_id == OrganizationIntegration.id)
        .scalar_subquery()
    )
    return (
        select(OrganizationIntegration, Integration, teams)
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
        .where(OrganizationIntegration.organization_id == organization_id)
    )


def _integration_view(
    link: OrganizationIntegration, integration: Integration, teams: int, default_probe: ProbeName
) -> IntegrationView:
    platform = get_platform(integration.platform)
    return IntegrationView(
        integration_id=integration.id,
        organization_id=link.organization_id,
        organization_integration_id=link.id,
        account=integration.account_name,
        platform=platform.name,
        base_url=integration.base_url,
        probe=platform.probe_for(integration.probe, default_probe),
        status=link.status.value,
        teams=teams,
        created_at=link.created_at,
    )


def get_integration(
    session: Session,
    organization_id: int,
    integration_id: int,
    default_probe: ProbeName = "authenticate",
) -> IntegrationView | None:
    """The organization's integration, or None where it has none of that id."""
    query = _integrations(organization_id).where(Integration.id == integration_id)
    for link, integration, teams in session.execute(query):
        return _integration_view(link, integration, teams, default_probe)
    return None


def integration_page(
    session: Session,
    organization_id: int,
    *,
    status: IntegrationStatus | None = None,
    limit: int = DEFAULT_PAGE,
    after: int | None = None,
    default_probe: ProbeName = "authenticate",
) -> IntegrationPage:
    """One page of the organization's integrations by id, after integration `after`."""
    query = _integrations(organization_id)
    if status is not None:
        query = query.where(OrganizationIntegration.status == status)
    if after is not None:
        query = query.where(Integration.id > after)
    rows = session.execute(query.order_by(Integration.id).limit(limit + 1)).all()
    found = [_integration_view(*row, default_probe) for row in rows[:limit]]
    more = len(rows) > limit
    return IntegrationPage(found, str(found[-1].integration_id) if more else None)


# -- changing integrations ---------------------------------------------------------------


@dataclass(frozen=True)
class RemovedIntegration:
    """An integration removed from an organization, with its teams."""

    organization_id: int
    integration_id: int
    teams: int
    """Teams removed with it; their status history stays until the retention prunes it."""


def _link(session: Session, organization_id: int, integration_id: int) -> OrganizationIntegration:
    link = session.scalars(
        select(OrganizationIntegration)
        .where(
            OrganizationIntegration.organization_id == organization_id,
            OrganizationIntegration.integration_id == integration_id,
        )
        .with_for_update()
    ).first()
    if link is None:
        raise NotFound(
            f"integration {integration_id} is not installed for organization {organization_id}"
        )
    return link


def set_integration_status(
    session: Session, organization_id: int, integration_id: int, status: IntegrationStatus
) -> None:
    """Disable an organization's integration (its checks end `invalid_integration`), or
    enable it again."""
    _link(session, organization_id, integration_id).status = status
    session.flush()


def remove_integration(
    session: Session, organization_id: int, integration_id: int
) -> RemovedIntegration:
    """Remove the organization's integration and its teams; their open checks end.

    The account's row goes too once no organization has it installed.
    """
    link = _link(session, organization_id, integration_id)
    teams = session.scalar(
        select(func.count(Team.id)).where(Team.organization_integration_id == link.id)
    )
    requests.close_open(
        session,
        organization_id,
        integration_id,
        None,
        outcome=Outcome.INVALID_INTEGRATION,
        error_code="integration_removed",
        message=f"Integration {integration_id} was removed before this check finished.",
    )
    # The database cascades to the teams and their held changes.
    session.delete(link)
    session.flush()
    still_used = session.scalar(
        select(OrganizationIntegration.id)
        .where(OrganizationIntegration.integration_id == integration_id)
        .limit(1)
    )
    if still_used is None:
        session.execute(delete(Integration).where(Integration.id == integration_id))
    return RemovedIntegration(organization_id, integration_id, teams or 0)


# -- changing teams ----------------------------------------------------------------------


@dataclass(frozen=True)
class RemovedTeam:
    """A team removed, with its key."""

    team_id: str
    organization_id: int
    integration_id: int


def _locked_team(session: Session, team_id: str) -> tuple[Team, OrganizationIntegration]:
    row = session.execute(
        select(Team, OrganizationIntegration)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .where(Team.id == team_id)
        .with_for_update(of=Team)
    ).first()
    if row is None:
        raise NotFound("no such team")
    return row[0], row[1]


def team_ask(session: Session, team_id: str) -> Ask | None:
    """Which organization and integration the team belongs to, as a check asks it."""
    row = session.execute(
        select(OrganizationIntegration.organization_id, OrganizationIntegration.integration_id)
        .join(Team, Team.organization_integration_id == OrganizationIntegration.id)
        .where(Team.id == team_id)
    ).first()
    return Ask(row.organization_id, row.integration_id, team_id) if row else None


def replace_key(session: Session, team_id: str, integration_key: str, vault: KeyVault) -> Ask:
    """Store a new key for the team: `key_version` grows, the status is `unknown` again.

    What was known about the old key goes (its errors, where it works, a change the
    guard held), and its open checks end `error` (`key_replaced`). Returns what to
    ask a check of.
    """
    check_key_format(integration_key)
    team, link = _locked_team(session, team_id)
    ask = Ask(link.organization_id, link.integration_id, team.id)
    requests.close_open(
        session,
        ask.organization_id,
        ask.integration_id,
        [team.id],
        outcome=Outcome.ERROR,
        error_code="key_replaced",
        message=f"The key of team {team.label!r} was replaced before this check finished; "
        "the new key has a check of its own.",
    )
    session.execute(delete(HeldChange).where(HeldChange.team_id == team.id))
    now = utcnow()
    team.encrypted_key = vault.encrypt(integration_key)
    team.key_version += 1
    if team.status is not TeamStatus.UNKNOWN:
        team.status, team.status_changed_at = TeamStatus.UNKNOWN, now
    team.last_checked_at = None
    team.last_error_code = team.works_on = team.jsm_ops = None
    team.last_http_status = None
    team.jsm_ops_checked_at = None
    session.flush()
    return ask


def remove_team(session: Session, team_id: str) -> RemovedTeam:
    """Remove the team and its key; its open checks end `invalid_team` (`team_removed`).

    Its status history stays until `OGV_HISTORY_RETENTION_DAYS` prunes it.
    """
    team, link = _locked_team(session, team_id)
    removed = RemovedTeam(team.id, link.organization_id, link.integration_id)
    requests.close_open(
        session,
        removed.organization_id,
        removed.integration_id,
        [team.id],
        outcome=Outcome.INVALID_TEAM,
        error_code="team_removed",
        message=f"Team {team.label!r} was removed before this check finished.",
    )
    session.delete(team)
    session.flush()
    return removed


# -- idempotent creates ------------------------------------------------------------------


def fingerprint(*asked: Any) -> str:
    """What a create asked for (never a key), as `IdempotentCreate.fingerprint` keeps it."""
    return hashlib.sha256(json.dumps(asked, separators=(",", ":")).encode()).hexdigest()


def claim_idempotency_key(
    session: Session, organization_id: int, key: str, asked: str
) -> IdempotentCreate | None:
    """None when `key` is new: this transaction now holds it, and must `settle` it.
    Otherwise the earlier create's record: what it created (`resource`:
    `integration:7`, `team:3-ops`) and the check it asked for.

    Refuses (IdempotencyConflict) a key sent before with other fields. Two creates
    with one key at once: the second waits for the first to commit, then gets its
    resource.
    """
    earlier = session.get(IdempotentCreate, (organization_id, key))
    if earlier is None:
        try:
            with session.begin_nested():
                session.add(
                    IdempotentCreate(
                        organization_id=organization_id, idempotency_key=key, fingerprint=asked
                    )
                )
            return None
        except IntegrityError:
            earlier = session.get(IdempotentCreate, (organization_id, key), populate_existing=True)
            if earlier is None:  # the other create rolled back after all
                raise Busy("the Idempotency-Key is in use; try again") from None
    if earlier.fingerprint != asked or earlier.resource is None:
        raise IdempotencyConflict("that Idempotency-Key was used for another create")
    return earlier


def settle_idempotency_key(
    session: Session,
    organization_id: int,
    key: str,
    resource: str,
    request_id: uuid.UUID | None = None,
) -> None:
    """Record what the key created (after `claim_idempotency_key` returned None)."""
    claimed = session.get(IdempotentCreate, (organization_id, key))
    assert claimed is not None, "settle only a key this transaction claimed"
    claimed.resource, claimed.request_id = resource, request_id
    session.flush()
