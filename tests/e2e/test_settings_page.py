"""A web app's settings page, end to end: `ValidationClient` and a real `ogv api` on one
stack (Redis and PostgreSQL), a real worker, the fake Opsgenie.

Save a key and see it confirmed, save a bad one and see it refused, see a valid
team's failing verdict wait as `confirming`, replace the key, list, remove.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.api import TOKEN, ApiProcess, call
from tests.support.services import ARTIFACTS
from tests.support.stacks import Stack, open_stack
from worker.enqueue import RequestView
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.client import ValidationClient

CONFIRM_AFTER = 30  # seconds: the second check is due long after this test looks


@pytest.fixture(scope="module")
def confirming_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    running = open_stack(
        "redis-postgres", request, tmp_path_factory, fake, OGV_CONFIRM_AFTER=str(CONFIRM_AFTER)
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(confirming_stack: Stack) -> Iterator[ApiProcess]:
    env = dict(confirming_stack.env, OGV_API_TOKEN=TOKEN, OGV_API_MAX_WAIT="15")
    log = ARTIFACTS / "logs" / f"api-settings-{uuid.uuid4().hex[:8]}.log"
    server = ApiProcess(env, log).start()
    yield server
    server.stop()
    assert "api.unhandled" not in log.read_text()


@pytest.fixture(scope="module")
def client(confirming_stack: Stack) -> Iterator[ValidationClient]:
    env = confirming_stack.env
    with ValidationClient(
        env["OGV_BROKER_URL"],
        env["OGV_DATABASE_URL"],
        queue=env["OGV_NAMESPACE"],
        encryption_keys=[env["OGV_ENCRYPTION_KEYS"].encode()],
        allowed_base_urls=env["OGV_ALLOWED_BASE_URLS"].split(","),
    ) as made:
        yield made


def key_on(fake: FakeOpsgenie, behaviour: str) -> str:
    key = str(uuid.uuid4())
    fake.set_key(key, KeyScenario(behaviour))  # type: ignore[arg-type]
    return key


def settled(client: ValidationClient, view: RequestView, timeout: float = 20) -> RequestView:
    """The request once it is no longer pending or running (final, or confirming)."""
    deadline = time.monotonic() + timeout
    while view.state in ("pending", "running"):
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
        view = client.get(view.id) or view
    return view


def test_a_settings_page_saves_checks_replaces_and_removes_keys(
    api: ApiProcess, client: ValidationClient, fake: FakeOpsgenie
) -> None:
    org = uuid.uuid4().int % 10**12 + 1
    good, bad, better = key_on(fake, "valid"), key_on(fake, "invalid_key"), key_on(fake, "valid")
    integration, created = client.add_integration(
        org, "acme-settings", platform="opsgenie", base_url=fake.url
    )
    assert created and integration.status == "active"

    # Save a key: the page waits a few seconds and shows the verdict.
    saved, _ = client.add_team(org, integration.integration_id, "payments", good, wait=15)
    assert (saved.validation.outcome, saved.team.status) == ("valid", "valid")
    refused, _ = client.add_team(org, integration.integration_id, "ops", bad, wait=15)
    assert (refused.validation.outcome, refused.team.status) == ("invalid_key", "invalid_key")

    # The good key is revoked upstream: the next check of a valid team waits to confirm.
    fake.set_key(good, KeyScenario("invalid_key"))
    team_id = saved.team.team_id
    asked = settled(client, client.request(org, integration.integration_id, team_id))
    assert asked.state == "confirming"
    shown = call(api.url, "GET", f"/v1/teams/{team_id}").body
    assert shown["status"] == "valid"  # unchanged until the second check agrees

    # The user pastes a new key: through the HTTP API this time.
    replaced = call(
        api.url, "PUT", f"/v1/teams/{team_id}/key?wait=15", body={"integration_key": better}
    )
    assert replaced.status == 200, replaced.text
    assert (replaced.body["validation"]["outcome"], replaced.body["team"]["status"]) == (
        "valid",
        "valid",
    )
    superseded = client.get(asked.id)
    assert superseded is not None
    assert (superseded.state, superseded.error_code) == ("failed", "key_replaced")
    assert fake.calls(better) == 1

    # List, then remove.
    page = client.list_teams(org, integration_id=integration.integration_id)
    assert [(t.label, t.status) for t in page.teams] == [
        ("ops", "invalid_key"),
        ("payments", "valid"),
    ]
    listed = call(api.url, "GET", f"/v1/organizations/{org}/integrations").body
    assert [i["teams"] for i in listed["integrations"]] == [2]
    assert client.remove_team(team_id).team_id == team_id
    assert call(api.url, "GET", f"/v1/teams/{team_id}").status == 404
    removed = call(
        api.url, "DELETE", f"/v1/organizations/{org}/integrations/{integration.integration_id}"
    )
    assert removed.body["teams"] == 1
    assert client.list_integrations(org).integrations == []

    for key in (good, bad, better):
        assert key not in replaced.text and key not in str(listed)
