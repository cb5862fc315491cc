"""Accounts, teams and requests written in-process, for tests of the pipeline and of
what runs beside it (the guard, re-validation, the importer)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import insert

from models import Requester, Team, ValidationRequest
from models.crypto import KeyVault
from models.db import session_factory
from worker import inventory
from worker.checks import requests
from worker.checks.pipeline import Collaborators
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

_orgs = itertools.count(1_000_000 + uuid.uuid4().int % 1_000_000 * 1000)


@dataclass
class Installed:
    organization_id: int
    integration_id: int
    team_id: str
    key: str
    label: str


Install = Callable[..., Installed]


def installer(deps: Collaborators, settings: Settings, fake: FakeOpsgenie) -> Install:
    """Installs a fresh account with one team whose key the fake answers as told (the
    `install` fixture)."""

    def make(scenario: KeyScenario, label: str = "ops", account: str | None = None) -> Installed:
        org = next(_orgs)
        key = f"key-{uuid.uuid4()}"
        fake.set_key(key, scenario)
        with deps.sessions.begin() as session:
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=account or f"acct-{org}",
                base_url=fake.url,
                allowed_base_urls=settings.allowed_base_urls,
            )
            team = inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=label,
                integration_key=key,
                vault=deps.vault,
            )
            return Installed(org, integration.id, team.id, key, label)

    return make


def request_for(deps: Collaborators, installed: Installed, **overrides: object) -> uuid.UUID:
    fields: dict[str, object] = {
        "organization_id": installed.organization_id,
        "integration_id": installed.integration_id,
        "team_id": installed.team_id,
        "requested_by": Requester.CLI,
    }
    fields.update(overrides)
    with deps.sessions.begin() as session:
        request, _ = requests.create_request(session, **fields)  # type: ignore[arg-type]
        return request.id


def load(deps: Collaborators, request_id: uuid.UUID) -> tuple[ValidationRequest, Team | None]:
    with deps.sessions() as session:
        request = session.get(ValidationRequest, request_id)
        assert request is not None
        return request, session.get(Team, request.team_id)


_bulk_orgs = itertools.count(5_000_000 + uuid.uuid4().int % 10_000 * 1000)


def add_teams(
    settings: Settings,
    fake: FakeOpsgenie,
    accounts: int,
    per_account: int,
    scenario: KeyScenario | None = None,
) -> tuple[int, list[str], dict[str, str]]:
    """An organization with `accounts` accounts of `per_account` teams, inserted in bulk."""
    scenario = scenario or KeyScenario("valid")
    org = next(_bulk_orgs)
    vault = KeyVault(settings.fernet_keys())
    keys: dict[str, str] = {}
    with session_factory(settings.effective_database_url).begin() as session:
        rows = []
        for a in range(accounts):
            _, link = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"acct-{org}-{a}",
                base_url=fake.url,
                allowed_base_urls=settings.allowed_base_urls,
            )
            key = f"key-{uuid.uuid4()}"
            fake.set_key(key, replace(scenario, account=f"acct-{org}-{a}"))
            token = vault.encrypt(key)
            for t in range(per_account):
                team_id = Team.make_id(link.id, f"team-{t:05d}")
                keys[team_id] = key
                rows.append(
                    {
                        "id": team_id,
                        "organization_integration_id": link.id,
                        "label": f"team-{t:05d}",
                        "encrypted_key": token,
                    }
                )
        session.execute(insert(Team), rows)
    return org, sorted(keys), keys
