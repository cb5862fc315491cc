"""Who may manage integrations and teams through the HTTP API, and the audit log of it.

Writes need a token with the `manage` scope; a token limited to some organizations
finds another organization's integrations and teams no more than if they did not
exist (404), writes included; and each write is audited once, in its own
transaction, as `token:<name>`. On SQLite and PostgreSQL, every answer checked
against the OpenAPI document (`call`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models import AuditEvent, IntegrationStatus, OrganizationIntegration, Team
from models.db import session_factory
from tests.support.api import TOKEN, Answer, ApiThread, call
from worker import access
from worker.checks.rules import CheckOptions
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[ValidationClient]:
    """A client of the test database, publishing to a broker nobody consumes."""
    with ValidationClient(
        f"ogvsqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
        settings.effective_database_url,
        encryption_keys=settings.fernet_keys(),
        allowed_base_urls=settings.allowed_base_urls,
        check_options=CheckOptions.from_settings(settings),
    ) as made:
        yield made


@pytest.fixture
def api(client: ValidationClient) -> Iterator[ApiThread]:
    # No cache: each test's tokens are seen at once.
    with ApiThread(client, ApiConfig(token=TOKEN, max_wait=1, token_cache_seconds=0)) as server:
        yield server


def new_org() -> int:
    return uuid.uuid4().int % 10**12 + 1


def new_key(fake: FakeOpsgenie) -> str:
    key = str(uuid.uuid4())
    fake.set_key(key, KeyScenario("valid"))
    return key


def token(settings: Settings, *scopes: str, orgs: tuple[int, ...] = ()) -> tuple[str, str]:
    """A stored token's name and secret."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with session_factory(settings.effective_database_url).begin() as session:
        issued = access.create_token(session, name, list(scopes), organizations=orgs, actor="t")
    return name, issued.token


def as_(api: ApiThread, bearer: str | None, method: str, path: str, body: Any = None) -> Answer:
    """A call with `bearer` (None: the bootstrap token)."""
    if bearer is None:
        return call(api.url, method, path, body=body)
    headers = {"Authorization": f"Bearer {bearer}"}
    return call(api.url, method, path, body=body, auth=False, headers=headers)


def setup(api: ApiThread, fake: FakeOpsgenie, org: int) -> tuple[int, str]:
    """An integration of `org` and a team of it, made with the bootstrap token."""
    installed = as_(api, None, "POST", f"/v1/organizations/{org}/integrations", {"account": "a"})
    integration = int(installed.body["integration_id"])
    body = {"label": "ops", "integration_key": new_key(fake)}
    saved = as_(
        api, None, "POST", f"/v1/organizations/{org}/integrations/{integration}/teams", body
    )
    assert saved.status == 201, saved.text
    return integration, str(saved.body["team"]["team_id"])


def writes(org: int, integration: int, team_id: str, key: str) -> list[tuple[str, str, Any]]:
    """Every write route, on the organization's integration and team."""
    one = f"/v1/organizations/{org}/integrations/{integration}"
    return [
        ("POST", f"/v1/organizations/{org}/integrations", {"account": "b"}),
        ("PATCH", one, {"status": "disabled"}),
        ("POST", f"{one}/teams", {"label": "new", "integration_key": key}),
        ("PUT", f"/v1/teams/{team_id}/key", {"integration_key": key}),
        ("DELETE", f"/v1/teams/{team_id}", None),
        ("DELETE", one, None),
    ]


def reads(org: int, integration: int, team_id: str) -> list[str]:
    one = f"/v1/organizations/{org}/integrations/{integration}"
    return [f"/v1/organizations/{org}/integrations", one, f"{one}/teams", f"/v1/teams/{team_id}"]


def unchanged(settings: Settings, org: int, integration: int, team_id: str) -> bool:
    """The integration active with its one team, whose key was never replaced."""
    with session_factory(settings.effective_database_url)() as session:
        link = session.scalars(
            select(OrganizationIntegration).where(
                OrganizationIntegration.organization_id == org,
                OrganizationIntegration.integration_id == integration,
            )
        ).one()
        teams = session.scalars(select(Team).where(Team.organization_integration_id == link.id))
        return link.status is IntegrationStatus.ACTIVE and [
            (t.id, t.key_version) for t in teams
        ] == [(team_id, 1)]


def audited(settings: Settings, org: int) -> list[tuple[str, str, str | None]]:
    """The organization's audit events, oldest first: actor, action, target."""
    with session_factory(settings.effective_database_url)() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.organization_id == org).order_by(AuditEvent.id)
        )
        return [(row.actor, row.action, row.target) for row in rows]


def test_writes_need_the_manage_scope(
    api: ApiThread, settings: Settings, fake: FakeOpsgenie
) -> None:
    org = new_org()
    integration, team_id = setup(api, fake, org)
    key = new_key(fake)
    for scopes in (("read",), ("validate",), ("operate",)):
        _, bearer = token(settings, *scopes)
        for path in reads(org, integration, team_id):
            assert as_(api, bearer, "GET", path).status == 200, (scopes, path)
        for method, path, body in writes(org, integration, team_id, key):
            refused = as_(api, bearer, method, path, body)
            assert (refused.status, refused.body["error"]["code"]) == (403, "forbidden")
            assert "manage scope" in refused.body["error"]["message"]
            assert key not in refused.text
    assert unchanged(settings, org, integration, team_id)

    _, manager = token(settings, "manage")
    answers = [
        as_(api, manager, m, p, b).status for m, p, b in writes(org, integration, team_id, key)
    ]
    assert answers == [201, 200, 201, 200, 200, 200]


def test_a_token_of_one_organization_finds_no_other_organizations_integrations_or_teams(
    api: ApiThread, settings: Settings, fake: FakeOpsgenie
) -> None:
    mine, theirs = new_org(), new_org()
    my_integration, my_team = setup(api, fake, mine)
    their_integration, their_team = setup(api, fake, theirs)
    _, limited = token(settings, "manage", orgs=(mine,))
    key = new_key(fake)

    for path in reads(theirs, their_integration, their_team):
        hidden = as_(api, limited, "GET", path)
        assert (hidden.status, hidden.body["error"]["code"]) == (404, "not_found"), path
    for method, path, body in writes(theirs, their_integration, their_team, key):
        hidden = as_(api, limited, method, path, body)
        assert (hidden.status, hidden.body["error"]["code"]) == (404, "not_found"), path
        assert key not in hidden.text
    assert unchanged(settings, theirs, their_integration, their_team)
    assert audited(settings, theirs) == [
        ("token:OGV_API_TOKEN", "integration.add", f"integration:{their_integration}"),
        ("token:OGV_API_TOKEN", "team.add", their_team),
    ]

    for path in reads(mine, my_integration, my_team):
        assert as_(api, limited, "GET", path).status == 200, path
    answers = [
        as_(api, limited, m, p, b).status for m, p, b in writes(mine, my_integration, my_team, key)
    ]
    assert answers == [201, 200, 201, 200, 200, 200]


def test_each_write_is_audited_once_as_its_caller(
    api: ApiThread, settings: Settings, fake: FakeOpsgenie
) -> None:
    org, key = new_org(), new_key(fake)
    name, bearer = token(settings, "manage", orgs=(org,))
    base = f"/v1/organizations/{org}/integrations"
    install = as_(api, bearer, "POST", base, {"account": "acme"})
    integration = install.body["integration_id"]
    one = f"{base}/{integration}"
    team_id = as_(api, bearer, "POST", f"{one}/teams", {"label": "ops", "integration_key": key})
    team_id = team_id.body["team"]["team_id"]
    steps = [
        ("PATCH", one, {"status": "disabled"}),
        ("PATCH", one, {"status": "active"}),
        ("PUT", f"/v1/teams/{team_id}/key", {"integration_key": new_key(fake)}),
        ("DELETE", f"/v1/teams/{team_id}", None),
        ("DELETE", one, None),
    ]
    assert [as_(api, bearer, m, p, b).status for m, p, b in steps] == [200] * len(steps)
    refused = [
        as_(api, bearer, "DELETE", f"/v1/teams/{team_id}").status,  # removed already
        as_(api, bearer, "PATCH", one, {"status": "nope"}).status,
    ]

    actor, target = f"token:{name}", f"integration:{integration}"
    assert refused == [404, 422]
    assert audited(settings, org) == [
        (actor, "integration.add", target),
        (actor, "team.add", team_id),
        (actor, "integration.disable", target),
        (actor, "integration.enable", target),
        (actor, "team.replace_key", team_id),
        (actor, "team.remove", team_id),
        (actor, "integration.remove", target),
    ]
    events = call(api.url, "GET", f"/v1/audit?organization_id={org}").body["events"]
    assert events[0]["details"] == {"teams": 0}
    assert {e["action"]: e["details"] for e in events}["team.add"] == {
        "integration_id": integration,
        "label": "ops",
    }
    assert all(key not in str(e) for e in events)
