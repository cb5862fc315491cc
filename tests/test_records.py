"""Writing integrations and teams: the allowlist, labels, and encryption at rest."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from models import Integration, OrganizationIntegration, Team
from models.crypto import KeyVault, UndecryptableKey
from models.db import session_factory
from worker import errors, inventory
from worker.platforms import OPSGENIE_EU
from worker.platforms.baseurl import BaseUrlError
from worker.settings import OFFICIAL_BASE_URLS, Settings


def _org() -> int:
    return uuid.uuid4().int % 10**12 + 1


def test_each_organization_gets_a_row_of_its_own_for_the_same_account(
    settings: Settings,
) -> None:
    """SPEC §8: an account name proves nothing. Another organization installing the
    same account (with another probe) gets its own row, and the first organization's
    row, probe and link are untouched; installing again for one organization finds
    its own row."""
    sessions = session_factory(settings.effective_database_url)
    account = f"acme-{uuid.uuid4().hex[:8]}"
    first_org, second_org = _org(), _org()
    with sessions.begin() as session:
        first, link_a = inventory.add_integration(
            session,
            organization_id=first_org,
            account_name=account,
            base_url="https://API.eu.opsgenie.com",
            allowed_base_urls=OFFICIAL_BASE_URLS,
            platform=OPSGENIE_EU,
            probe="alerts",
        )
        second, link_b = inventory.add_integration(
            session,
            organization_id=second_org,
            account_name=account,
            base_url="https://api.eu.opsgenie.com/",
            allowed_base_urls=OFFICIAL_BASE_URLS,
            platform=OPSGENIE_EU,
            probe="authenticate",
        )
        again, link_again = inventory.add_integration(
            session,
            organization_id=first_org,
            account_name=account,
            base_url="https://api.eu.opsgenie.com/",
            allowed_base_urls=OFFICIAL_BASE_URLS,
            platform=OPSGENIE_EU,
        )
        assert first.id != second.id and link_a.id != link_b.id
        assert (again.id, link_again.id) == (first.id, link_a.id)
        assert first.base_url == second.base_url == "https://api.eu.opsgenie.com/"
        rows = session.scalars(select(Integration).where(Integration.account_name == account)).all()
        owners = {row.organization_id: row.probe for row in rows}
        assert owners == {first_org: "alerts", second_org: "authenticate"}
        # Neither organization reaches the other's row through its own id.
        assert inventory.find_link(session, second_org, first.id) is None
        assert inventory.find_link(session, first_org, second.id) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://api.opsgenie.com.evil.test/",
        "https://user:pw@api.opsgenie.com/",
        "http://api.opsgenie.com/",
        "https://api.opsgenie.com:8443/",
        "https://127.0.0.1/",
        "ftp://api.opsgenie.com/",
    ],
)
def test_base_urls_off_the_allowlist_are_refused_and_nothing_is_written(
    settings: Settings, url: str
) -> None:
    sessions = session_factory(settings.effective_database_url)
    account = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BaseUrlError), sessions.begin() as session:
        inventory.add_integration(
            session,
            organization_id=_org(),
            account_name=account,
            base_url=url,
            allowed_base_urls=OFFICIAL_BASE_URLS,
        )
    with sessions() as session:
        assert (
            session.scalars(select(Integration).where(Integration.account_name == account)).all()
            == []
        )


def _link(settings: Settings) -> tuple[int, int]:
    org = _org()
    with session_factory(settings.effective_database_url).begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"acct-{org}",
            base_url=OFFICIAL_BASE_URLS[0],
            allowed_base_urls=OFFICIAL_BASE_URLS,
        )
        return org, integration.id


def test_keys_are_encrypted_at_rest(settings: Settings) -> None:
    org, integration_id = _link(settings)
    vault = KeyVault(settings.fernet_keys())
    key = f"sentinel-{uuid.uuid4()}"
    sessions = session_factory(settings.effective_database_url)
    with sessions.begin() as session:
        team = inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration_id,
            label="Ops",
            integration_key=key,
            vault=vault,
        )
        team_id = team.id
    with sessions() as session:
        raw = session.execute(
            text("SELECT encrypted_key FROM teams WHERE id = :id"), {"id": team_id}
        ).scalar_one()
        link_id = session.scalars(
            select(OrganizationIntegration.id).where(OrganizationIntegration.organization_id == org)
        ).one()
    assert key.encode() not in bytes(raw)
    assert vault.decrypt(bytes(raw)) == key
    assert team_id == f"{link_id}-Ops"
    with pytest.raises(UndecryptableKey):
        KeyVault([Fernet.generate_key()]).decrypt(bytes(raw))


def test_a_duplicate_label_is_a_clear_error(settings: Settings) -> None:
    org, integration_id = _link(settings)
    vault = KeyVault(settings.fernet_keys())
    sessions = session_factory(settings.effective_database_url)
    with sessions.begin() as session:
        first = inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration_id,
            label="dup",
            integration_key="k1",
            vault=vault,
        )
        team_id = first.id
    with pytest.raises(inventory.DuplicateTeam) as raised, sessions.begin() as session:
        inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration_id,
            label="dup",
            integration_key="k2",
            vault=vault,
        )
    assert raised.value.code == "duplicate_team"
    with sessions() as session:
        stored = session.get(Team, team_id)
        assert stored is not None and vault.decrypt(stored.encrypted_key) == "k1"


@pytest.mark.parametrize("label", ["", " padded", "tab\there", "x" * 256, "new\nline", 7, None])
def test_bad_labels_are_refused(settings: Settings, label: Any) -> None:
    org, integration_id = _link(settings)
    with (
        pytest.raises(errors.RecordError),
        session_factory(settings.effective_database_url).begin() as session,
    ):
        inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration_id,
            label=label,
            integration_key="k",
            vault=KeyVault(settings.fernet_keys()),
        )


@pytest.mark.parametrize("key", ["", "has space", "new\nline", "ключ", "k" * 201, 1234, None])
def test_keys_that_no_header_can_carry_are_refused(settings: Settings, key: Any) -> None:
    org, integration_id = _link(settings)
    with (
        pytest.raises(errors.RecordError) as raised,
        session_factory(settings.effective_database_url).begin() as session,
    ):
        inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration_id,
            label="x",
            integration_key=key,
            vault=KeyVault(settings.fernet_keys()),
        )
    if key:
        assert str(key) not in str(raised.value)


def test_a_team_needs_an_installed_integration(settings: Settings) -> None:
    with (
        pytest.raises(errors.NotFound),
        session_factory(settings.effective_database_url).begin() as session,
    ):
        inventory.add_team(
            session,
            organization_id=_org(),
            integration_id=999_999,
            label="x",
            integration_key="k",
            vault=KeyVault(settings.fernet_keys()),
        )
