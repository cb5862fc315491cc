"""The Opsgenie sunset through real processes: platforms, non-answers, keys that moved.

A worker on Redis and PostgreSQL checks teams on every platform the fake stands
for (Opsgenie US at its root, EU and JSM Ops under their prefixes), with the
lookup of invalid keys on, as a deployment runs it by default.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from models import Team, TeamStatus, TeamStatusChange
from models.crypto import KeyVault
from tests.support.monitoring import check_all
from tests.support.stacks import Stack, open_stack
from worker import inventory
from worker.platforms import PlatformName, ProbeName, get_platform
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario


@pytest.fixture(scope="module")
def sunset(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    stack = open_stack("redis-postgres", request, tmp_path_factory, fake, OGV_LOCATE_KEYS="on")
    yield stack
    stack.stop()


@dataclass(frozen=True)
class Installed:
    org: int
    integration: int
    teams: dict[str, str]
    keys: dict[str, str]

    def jobs(self) -> dict[str, tuple[int, int, str]]:
        return {label: (self.org, self.integration, team) for label, team in self.teams.items()}


def install(
    stack: Stack,
    fake: FakeOpsgenie,
    cases: dict[str, KeyScenario],
    platform: PlatformName = "opsgenie",
    probe: ProbeName | None = None,
    org: int | None = None,
) -> Installed:
    """An account on `platform` (reached at the fake) with one team per case."""
    org = org or uuid.uuid4().int % 10**9 + 1
    keys = {label: f"key-{uuid.uuid4()}" for label in cases}
    for label, scenario in cases.items():
        fake.set_key(keys[label], scenario)
    engine = create_engine(stack.env["OGV_DATABASE_URL"])
    with Session(engine) as session, session.begin():
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"acct-{uuid.uuid4().hex[:8]}",
            base_url=fake.base_url_for(platform),
            allowed_base_urls=[fake.base_url_for(platform)],
            platform=get_platform(platform),
            probe=probe,
        )
        vault = KeyVault([stack.env["OGV_ENCRYPTION_KEYS"].encode()])
        teams = {
            label: inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=label,
                integration_key=keys[label],
                vault=vault,
            ).id
            for label in cases
        }
        installed = Installed(org, integration.id, teams, keys)
    engine.dispose()
    return installed


def team_rows(stack: Stack, team_ids: list[str]) -> dict[str, tuple[TeamStatus, str | None]]:
    engine = create_engine(stack.env["OGV_DATABASE_URL"])
    with Session(engine) as session:
        rows = session.execute(
            select(Team.id, Team.status, Team.works_on).where(Team.id.in_(team_ids))
        )
        found = {team_id: (status, works_on) for team_id, status, works_on in rows}
    engine.dispose()
    return found


def history_count(stack: Stack, team_ids: list[str]) -> int:
    engine = create_engine(stack.env["OGV_DATABASE_URL"])
    with Session(engine) as session:
        count = session.scalar(select(func.count()).where(TeamStatusChange.team_id.in_(team_ids)))
    engine.dispose()
    return int(count or 0)


def test_a_mixed_fleet_is_checked_with_each_integrations_probe_in_one_run(
    sunset: Stack, fake: FakeOpsgenie
) -> None:
    org = uuid.uuid4().int % 10**9 + 1
    api_created = {"us-api-created": KeyScenario("no_config_access")}
    fleet = [
        install(sunset, fake, {"us": KeyScenario()}, "opsgenie", org=org),
        install(sunset, fake, api_created, "opsgenie", "alerts", org),
        install(sunset, fake, {"eu": KeyScenario()}, "opsgenie-eu", org=org),
        install(sunset, fake, {"jsm": KeyScenario()}, "jsm-ops", org=org),
    ]

    done = sunset.ogv("revalidate", "--org", str(org), "--json", timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert (summary["requests"], summary["outcomes"]) == (4, {"valid": 4})
    seen = {
        (call.host, call.method, call.path)
        for installed in fleet
        for key in installed.keys.values()
        for call in fake.requests()
        if call.key == key
    }
    assert seen == {
        ("opsgenie", "POST", "/v2/integrations/authenticate"),  # OGV_PROBE's default
        ("opsgenie", "GET", "/v2/alerts"),  # the integration's own probe
        ("opsgenie-eu", "POST", "/eu/v2/integrations/authenticate"),
        ("jsm-ops", "GET", "/jsm/ops/integration/v2/alerts"),  # JSM Ops has only alerts
    }


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        ("redirect", 302),
        ("html_404", 404),
        ("gateway_timeout", 408),
        ("empty_200", 200),
        ("captive_portal", 200),
        ("retired", 410),
    ],
)
def test_an_answer_that_is_not_opsgenies_never_changes_a_status(
    sunset: Stack, fake: FakeOpsgenie, behaviour: str, status: int
) -> None:
    installed = install(sunset, fake, {"ops": KeyScenario()})
    [first] = check_all(sunset, installed.jobs()).values()
    assert first.outcome == "valid"
    fake.set_key(installed.keys["ops"], KeyScenario(behaviour))  # type: ignore[arg-type]

    [view] = check_all(sunset, installed.jobs()).values()

    assert (view.outcome, view.error_code, view.http_status) == (
        "error",
        "unrecognised_answer",
        status,
    )
    assert view.attempts == int(sunset.env["OGV_MAX_ATTEMPTS"])  # retried like a 5xx
    assert team_rows(sunset, list(installed.teams.values())) == {
        installed.teams["ops"]: (TeamStatus.VALID, None)
    }
    assert history_count(sunset, list(installed.teams.values())) == 1  # unknown -> valid only


def test_a_key_that_turns_invalid_is_looked_up_once_where_it_works(
    sunset: Stack, fake: FakeOpsgenie
) -> None:
    installed = install(
        sunset, fake, {"eu-key": KeyScenario(), "moved": KeyScenario(), "gone": KeyScenario()}
    )
    assert {v.outcome for v in check_all(sunset, installed.jobs()).values()} == {"valid"}
    for label, behaviour in (("eu-key", "eu_only"), ("moved", "jsm_only"), ("gone", "invalid_key")):
        fake.set_key(installed.keys[label], KeyScenario(behaviour))  # type: ignore[arg-type]

    views = check_all(sunset, installed.jobs())

    assert {label: (v.outcome, v.works_on) for label, v in views.items()} == {
        "eu-key": ("invalid_key", ["opsgenie-eu"]),
        "moved": ("invalid_key", ["jsm-ops"]),
        "gone": ("invalid_key", []),
    }
    assert "this key belongs to the EU region" in (views["eu-key"].message or "")
    assert "JSM Operations" in (views["moved"].message or "")
    rows = team_rows(sunset, list(installed.teams.values()))
    assert rows[installed.teams["eu-key"]] == (TeamStatus.INVALID_KEY, "opsgenie-eu")
    hosts = lambda: sorted(  # noqa: E731
        call.host for call in fake.requests() if call.key == installed.keys["eu-key"]
    )
    assert hosts() == ["jsm-ops", "opsgenie", "opsgenie", "opsgenie-eu"]

    again = check_all(sunset, installed.jobs())

    # Already invalid: no second lookup, and what the first one found is kept.
    assert hosts() == ["jsm-ops", "opsgenie", "opsgenie", "opsgenie", "opsgenie-eu"]
    assert again["eu-key"].works_on == []
    rows = team_rows(sunset, list(installed.teams.values()))
    assert rows[installed.teams["eu-key"]] == (TeamStatus.INVALID_KEY, "opsgenie-eu")


def test_a_malformed_key_is_invalid_and_not_looked_up(sunset: Stack, fake: FakeOpsgenie) -> None:
    installed = install(sunset, fake, {"typo": KeyScenario("malformed_key")})

    [view] = check_all(sunset, installed.jobs()).values()

    assert (view.outcome, view.error_code, view.http_status) == (
        "invalid_key",
        "malformed_key",
        422,
    )
    assert "cannot work anywhere" in (view.message or "")
    assert [c.host for c in fake.requests() if c.key == installed.keys["typo"]] == ["opsgenie"]


def test_a_429_keeps_its_rate_limit_headers_on_the_request(
    sunset: Stack, fake: FakeOpsgenie
) -> None:
    installed = install(sunset, fake, {"busy": KeyScenario("throttle", times=-1)})

    [view] = check_all(sunset, installed.jobs()).values()

    assert (view.outcome, view.error_code) == ("error", "throttled")
    assert (view.rate_limit_state, view.rate_limit_reason) == ("THROTTLED", "ACCOUNT")
