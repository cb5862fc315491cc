"""Integrations and teams as rows: installing an account, storing a team's key.

Functions take a session and never commit. Refusals are `RecordError`s whose
`code` is stable for scripts and the API.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import (
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    Integration,
    IntegrationStatus,
    OrganizationIntegration,
    Team,
)
from models.crypto import KeyVault
from models.integration import OPSGENIE_PROVIDER
from worker.errors import NotFound, RecordError
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
    """Install an account for an organization: a row of the organization's own.

    Another organization that named the same account has its own row, which this
    never reads nor changes (an account name proves nothing, SPEC §8). Installing
    again for the same organization finds its row; a probe given then replaces that
    row's probe, and a different platform is refused.
    """
    url = check_allowed(base_url, allowed_base_urls)
    account = account_name.strip()
    if not account or len(account) > 255 or not account.isprintable():
        raise RecordError("the account name must be 1 to 255 printable characters")
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
    if link is None:
        link = OrganizationIntegration(organization_id=organization_id, integration=integration)
        session.add(link)
    link.status = IntegrationStatus.ACTIVE
    session.flush()
    return integration, link


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
    return SwitchOffDates(integration.id, integration.platform, migrated, off)


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
    if not label or len(label) > 255 or not label.isprintable() or label != label.strip():
        raise RecordError(
            "a team label must be 1 to 255 printable characters without surrounding spaces"
        )


def check_key_format(key: str) -> None:
    # Opsgenie keys are UUIDs; we only insist on what an HTTP header can carry.
    if not key or len(key) > 200 or not key.isascii() or not key.isprintable() or " " in key:
        raise RecordError("an integration key must be 1 to 200 visible ASCII characters")
