"""Integrations and teams through the HTTP API, in-process, on SQLite and PostgreSQL.

The settings page of a web app, step by step: install an account, save a key and
see its check, replace the key, list, disable, remove. Checks run in-process
(`run_attempt`, as a worker would) against the fake Opsgenie. Every answer is
checked against the OpenAPI document (`call`), and no answer holds a key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from models import IdempotentCreate, Team, TeamStatusChange, ValidationRequest
from tests.support.api import ApiThread, call
from worker.checks.pipeline import Collaborators, Finished, run_attempt
from worker.checks.rules import CheckOptions
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[ValidationClient]:
    """A client of the test database; it publishes to a broker of its own that nobody
    consumes: checks run in-process."""
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
    with ApiThread(client, ApiConfig(token=None, max_wait=2)) as server:
        yield server


def new_org() -> int:
    return uuid.uuid4().int % 10**12 + 1


def new_key(fake: FakeOpsgenie, behaviour: str = "valid") -> str:
    key = f"{uuid.uuid4()}"
    fake.set_key(key, KeyScenario(behaviour))  # type: ignore[arg-type]
    return key


def run_check(deps: Collaborators, request_id: str) -> None:
    assert isinstance(run_attempt(uuid.UUID(request_id), deps), Finished)


def install(api: ApiThread, org: int, **body: Any) -> dict[str, Any]:
    answer = call(api.url, "POST", f"/v1/organizations/{org}/integrations", body=body)
    assert answer.status == 201, answer.text
    return dict(answer.body)


def add_team(api: ApiThread, org: int, integration: int, label: str, key: str) -> Any:
    path = f"/v1/organizations/{org}/integrations/{integration}/teams"
    return call(api.url, "POST", path, body={"label": label, "integration_key": key})


def test_the_settings_page_flow(
    api: ApiThread, client: ValidationClient, deps: Collaborators, fake: FakeOpsgenie
) -> None:
    org, good, bad, better = new_org(), new_key(fake), new_key(fake, "invalid_key"), new_key(fake)
    integration = install(api, org, account="acme")
    assert {k: integration[k] for k in ("organization_id", "account", "platform", "status")} == {
        "organization_id": org,
        "account": "acme",
        "platform": "opsgenie",
        "status": "active",
    }
    integration_id = integration["integration_id"]

    saved = add_team(api, org, integration_id, "payments", good)
    assert saved.status == 201, saved.text
    team_id = saved.body["team"]["team_id"]
    assert saved.headers["location"] == f"/v1/teams/{team_id}"
    assert team_id == f"{integration['organization_integration_id']}-payments"
    assert (saved.body["team"]["status"], saved.body["validation"]["state"]) == (
        "unknown",
        "pending",
    )
    run_check(deps, saved.body["validation"]["id"])
    checked = call(api.url, "GET", f"/v1/validations/{saved.body['validation']['id']}")
    assert (checked.body["state"], checked.body["outcome"]) == ("done", "valid")
    assert call(api.url, "GET", f"/v1/teams/{team_id}").body["status"] == "valid"

    refused = add_team(api, org, integration_id, "ops", bad)
    run_check(deps, refused.body["validation"]["id"])
    ops = call(api.url, "GET", f"/v1/teams/{refused.body['team']['team_id']}").body
    assert ops["status"] == "invalid_key"

    replaced = call(api.url, "PUT", f"/v1/teams/{team_id}/key", body={"integration_key": better})
    assert replaced.status == 200, replaced.text
    assert replaced.body["team"]["status"] == "unknown"
    assert replaced.body["validation"]["id"] != saved.body["validation"]["id"]
    run_check(deps, replaced.body["validation"]["id"])
    assert call(api.url, "GET", f"/v1/teams/{team_id}").body["status"] == "valid"
    assert fake.calls(better) == 1

    teams_path = f"/v1/organizations/{org}/integrations/{integration_id}/teams"
    listed = call(api.url, "GET", teams_path).body
    assert [t["team_id"] for t in listed["teams"]] == sorted([team_id, ops["team_id"]])
    invalid = call(api.url, "GET", f"{teams_path}?status=invalid_key").body["teams"]
    assert [t["team_id"] for t in invalid] == [ops["team_id"]]
    page = call(api.url, "GET", f"/v1/organizations/{org}/integrations").body
    assert [(i["integration_id"], i["teams"]) for i in page["integrations"]] == [
        (integration_id, 2)
    ]

    removed = call(api.url, "DELETE", f"/v1/teams/{team_id}")
    assert removed.body == {
        "team_id": team_id,
        "organization_id": org,
        "integration_id": integration_id,
    }
    assert call(api.url, "GET", f"/v1/teams/{team_id}").status == 404
    assert call(api.url, "DELETE", f"/v1/teams/{team_id}").status == 404

    for key in (good, bad, better):
        assert key not in str([saved.text, refused.text, replaced.text, listed, page])
    with client.sessions() as session:
        stored = session.scalars(select(Team.encrypted_key)).all()
    assert not any(key.encode() in blob for blob in stored for key in (good, bad, better))


def test_removing_keeps_the_history_and_ends_open_checks(
    api: ApiThread, client: ValidationClient, deps: Collaborators, fake: FakeOpsgenie
) -> None:
    org = new_org()
    integration_id = install(api, org, account="acme")["integration_id"]
    first = add_team(api, org, integration_id, "a", new_key(fake)).body
    run_check(deps, first["validation"]["id"])
    second = add_team(api, org, integration_id, "b", new_key(fake)).body
    team_ids = [first["team"]["team_id"], second["team"]["team_id"]]

    path = f"/v1/organizations/{org}/integrations/{integration_id}"
    removed = call(api.url, "DELETE", path)

    assert removed.body == {"organization_id": org, "integration_id": integration_id, "teams": 2}
    assert call(api.url, "GET", path).status == 404
    assert call(api.url, "GET", f"/v1/organizations/{org}/integrations").body == {
        "integrations": [],
        "next_cursor": None,
    }
    pending = call(api.url, "GET", f"/v1/validations/{second['validation']['id']}").body
    assert (pending["state"], pending["outcome"], pending["error_code"]) == (
        "failed",
        "invalid_integration",
        "integration_removed",
    )
    with client.sessions() as session:
        history = session.scalars(
            select(TeamStatusChange.team_id).where(TeamStatusChange.team_id.in_(team_ids))
        ).all()
        teams_left = session.scalar(select(func.count()).where(Team.id.in_(team_ids)))
    assert (history, teams_left) == ([team_ids[0]], 0)


def test_a_disabled_integration_checks_nothing_until_enabled(
    api: ApiThread, deps: Collaborators, fake: FakeOpsgenie
) -> None:
    org, key = new_org(), new_key(fake)
    integration_id = install(api, org, account="acme")["integration_id"]
    path = f"/v1/organizations/{org}/integrations/{integration_id}"

    disabled = call(api.url, "PATCH", path, body={"status": "disabled"})
    saved = add_team(api, org, integration_id, "ops", key).body
    run_check(deps, saved["validation"]["id"])

    assert disabled.body["status"] == "disabled"
    outcome = call(api.url, "GET", f"/v1/validations/{saved['validation']['id']}").body["outcome"]
    assert (outcome, fake.calls(key)) == ("invalid_integration", 0)
    listed = call(api.url, "GET", f"/v1/organizations/{org}/integrations?status=disabled").body
    assert [i["integration_id"] for i in listed["integrations"]] == [integration_id]
    assert call(api.url, "PATCH", path, body={"status": "active"}).body["status"] == "active"


def test_creates_with_an_idempotency_key_are_answered_once(
    api: ApiThread, client: ValidationClient, fake: FakeOpsgenie
) -> None:
    org = new_org()
    path = f"/v1/organizations/{org}/integrations"
    body = {"account": "acme", "platform": "opsgenie"}
    once = {"Idempotency-Key": "install-acme"}

    first = call(api.url, "POST", path, body=body, headers=once)
    again = call(api.url, "POST", path, body=body, headers=once)
    other = call(api.url, "POST", path, body={"account": "other"}, headers=once)

    assert (first.status, again.status, other.status) == (201, 200, 409)
    assert again.body == first.body
    assert other.body["error"]["code"] == "idempotency_conflict"
    # Another organization's key of the same text is its own.
    elsewhere = call(
        api.url, "POST", f"/v1/organizations/{org + 1}/integrations", body=body, headers=once
    )
    assert elsewhere.status == 201

    teams = f"{path}/{first.body['integration_id']}/teams"
    team = {"label": "ops", "integration_key": new_key(fake)}
    saved = call(api.url, "POST", teams, body=team, headers={"Idempotency-Key": "ops"})
    resent = call(api.url, "POST", teams, body=team, headers={"Idempotency-Key": "ops"})
    moved = call(
        api.url, "POST", teams, body={**team, "label": "dev"}, headers={"Idempotency-Key": "ops"}
    )

    assert (saved.status, resent.status, moved.status) == (201, 200, 409)
    assert resent.body == saved.body
    with client.sessions() as session:
        requests = session.scalar(
            select(func.count()).where(ValidationRequest.team_id == saved.body["team"]["team_id"])
        )
        kept = session.scalar(select(func.count()).where(IdempotentCreate.organization_id == org))
    assert (requests, kept) == (1, 2)


def test_refusals_are_one_line_and_never_repeat_the_key(api: ApiThread, fake: FakeOpsgenie) -> None:
    org = new_org()
    integration_id = install(api, org, account="acme")["integration_id"]
    teams = f"/v1/organizations/{org}/integrations/{integration_id}/teams"
    secret = "0f3b6a1e-77c2 4d" + uuid.uuid4().hex  # a space: malformed

    malformed = call(api.url, "POST", teams, body={"label": "ops", "integration_key": secret})
    saved = add_team(api, org, integration_id, "ops", new_key(fake))
    duplicate = add_team(api, org, integration_id, "ops", new_key(fake))
    bad_put = call(
        api.url, "PUT", f"/v1/teams/{saved.body['team']['team_id']}/key",
        body={"integration_key": secret},
    )  # fmt: skip
    unknown = call(api.url, "PUT", "/v1/teams/999999-x/key", body={"integration_key": "k"})
    nowhere = add_team(api, org, integration_id + 10_000, "ops", new_key(fake))
    not_allowed = call(
        api.url, "POST", f"/v1/organizations/{org}/integrations",
        body={"account": "acme", "platform": "opsgenie", "base_url": "https://evil.example/"},
    )  # fmt: skip

    assert [a.status for a in (malformed, duplicate, bad_put, unknown, nowhere, not_allowed)] == [
        422, 409, 422, 404, 404, 422,
    ]  # fmt: skip
    assert duplicate.body["error"]["code"] == "duplicate_team"
    for answer in (malformed, bad_put):
        assert secret not in answer.text and "\n" not in answer.body["error"]["message"]
    assert "integration_key" in malformed.body["error"]["message"]
