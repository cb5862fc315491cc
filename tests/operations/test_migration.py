"""Moving to JSM Operations: the readiness report, its API read, `migrate`, and the
migration probe, on SQLite and on PostgreSQL with Redis, against the fake's three hosts.

The CLI runs in-process on the test's database (`cli`), so the pipeline (`deps`)
and the command line share it: the report's probes, a move, and the next check of
a moved team all meet in the same rows.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import select, update
from typer.testing import CliRunner

from models import Integration, IntegrationMove, Outcome, Requester, Team, TeamStatus
from tests.support.api import TOKEN, ApiThread, call
from tests.support.services import NAMESPACE
from tests.support.stacks import FAST_RETRIES, platform_env
from worker import inventory, readiness
from worker.checks import requests
from worker.checks.pipeline import Collaborators, Finished, run_attempt
from worker.operations import migration
from worker.operations.cli import app
from worker.platforms import JSM_OPS, OPSGENIE, OPSGENIE_EU, Platform
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient

runner = CliRunner()
_orgs = itertools.count(7_000_000 + uuid.uuid4().int % 10_000 * 1000)

END_OF_SUPPORT = "2027-04-05"


def days_left() -> int:
    return readiness.days_left()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def cli(
    settings: Settings,
    fernet_key: str,
    fake: FakeOpsgenie,
    ogv_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Callable[..., tuple[int, Any]]:
    """`ogv ... --json` in-process on the test's database; on PostgreSQL with Redis, so
    the report's pacing is the workers' shared one."""
    env = {
        **FAST_RETRIES,
        **platform_env(fake),
        "OGV_DATABASE_URL": settings.database_url,
        "OGV_ENCRYPTION_KEYS": fernet_key,
        "OGV_NAMESPACE": NAMESPACE,
    }
    if settings.database_url.startswith("postgresql"):
        env["OGV_BROKER_URL"] = request.getfixturevalue("redis_url")
    else:
        env["OGV_BROKER_URL"] = "embedded"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    assert get_settings().uses_redis == env["OGV_BROKER_URL"].startswith("redis")

    def run(*args: str) -> tuple[int, Any]:
        result = runner.invoke(app, [*args, "--json"])
        assert "Traceback" not in result.output
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None

    return run


@dataclass
class Fleet:
    """One organization's integrations and teams (by label), with their keys."""

    org: int
    integrations: dict[str, int]
    """By account name."""
    teams: dict[str, str]
    keys: dict[str, str]


def install(
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
    accounts: dict[str, tuple[Platform, dict[str, KeyScenario]]],
    org: int | None = None,
) -> Fleet:
    """Install `accounts` (name: platform and teams) for a new organization (or `org`)."""
    org = org or next(_orgs)
    fleet = Fleet(org, {}, {}, {})
    with deps.sessions.begin() as session:
        for name, (platform, cases) in accounts.items():
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=name,
                base_url=deps.options.base_urls[platform.name],
                allowed_base_urls=settings.allowed_base_urls,
                platform=platform,
            )
            fleet.integrations[name] = integration.id
            for label, scenario in cases.items():
                key = fleet.keys[label] = f"key-{uuid.uuid4()}"
                fake.set_key(key, replace(scenario, account=name))
                team = inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=label,
                    integration_key=key,
                    vault=deps.vault,
                )
                fleet.teams[label] = team.id
    return fleet


def account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


def teams_of(deps: Collaborators, fleet: Fleet) -> dict[str, Team]:
    with deps.sessions() as session:
        rows = session.scalars(select(Team).where(Team.id.in_(fleet.teams.values())))
        by_id = {team.id: team for team in rows}
    return {label: by_id[team_id] for label, team_id in fleet.teams.items()}


def jsm_ops_of(deps: Collaborators, fleet: Fleet) -> dict[str, str | None]:
    return {label: team.jsm_ops for label, team in teams_of(deps, fleet).items()}


def jsm_calls(fake: FakeOpsgenie, key: str) -> list[tuple[str, str, dict[str, str]]]:
    return [
        (call.method, call.path, call.query)
        for call in fake.requests()
        if call.key == key and call.host == "jsm-ops"
    ]


ALERTS_ON_JSM = ("GET", "/jsm/ops/integration/v2/alerts", {"limit": "1"})

# A fleet whose keys JSM Ops answers known ways: two work there, two are refused
# there (genuine 401s), one gets no genuine answer (503 every time).
MIXED = {
    "moved": KeyScenario("jsm_only"),
    "both": KeyScenario("valid"),
    "eu": KeyScenario("eu_only"),
    "dead": KeyScenario("invalid_key"),
    "flaky": KeyScenario("server_error", times=-1),
}


def mixed_fleet(deps: Collaborators, fake: FakeOpsgenie, settings: Settings) -> Fleet:
    """MIXED on an Opsgenie US account, plus an account already on JSM Ops (not counted)."""
    return install(
        deps,
        fake,
        settings,
        {
            account(): (OPSGENIE, MIXED),
            account(): (JSM_OPS, {"already": KeyScenario("valid")}),
        },
    )


def request_for(deps: Collaborators, fleet: Fleet, label: str, integration: int) -> uuid.UUID:
    with deps.sessions.begin() as session:
        request, _ = requests.create_request(
            session,
            organization_id=fleet.org,
            integration_id=integration,
            team_id=fleet.teams[label],
            requested_by=Requester.CLI,
        )
        return request.id


# -- the report ----------------------------------------------------------------------------


def test_the_report_probes_opsgenie_teams_on_jsm_ops_and_counts_them(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
) -> None:
    fleet = mixed_fleet(deps, fake, settings)
    us = next(iter(fleet.integrations.values()))

    code, out = cli("migration", "report", "--org", str(fleet.org))

    assert code == 0, out
    left = days_left()
    assert out == {
        "end_of_support": END_OF_SUPPORT,
        "days_left": left,
        "organizations": [
            {
                "organization_id": fleet.org,
                "teams": 5,
                "works": 2,
                "fails": 2,
                "unknown": 1,
                "days_left": left,
                "deadline": END_OF_SUPPORT,
            }
        ],
        "integrations": [
            {
                "integration_id": us,
                "account": next(iter(fleet.integrations)),
                "platform": "opsgenie",
                "teams": 5,
                "works": 2,
                "fails": 2,
                "unknown": 1,
                "ready": False,
                "migrated_on": None,
                "switched_off_on": None,
                "deadline": END_OF_SUPPORT,
                "deadline_reason": "end_of_support",
                "days_left": left,
            }
        ],
        "probed": {"teams": 5, "works": 2, "fails": 2, "unknown": 1},
    }
    assert jsm_ops_of(deps, fleet) == {
        "moved": "works",
        "both": "works",
        "eu": "fails",
        "dead": "fails",
        "flaky": "unknown",
        "already": None,  # on JSM Ops already: checked as any team, never "readied"
    }
    teams = teams_of(deps, fleet)
    assert all(teams[label].jsm_ops_checked_at is not None for label in MIXED)
    # Read-only, on JSM Ops only: one alerts probe per key (the 503s are not retried),
    # nothing on the Opsgenie hosts, and nothing about a team's status.
    for label in MIXED:
        assert jsm_calls(fake, fleet.keys[label]) == [ALERTS_ON_JSM]
        assert fake.calls(fleet.keys[label]) == 1
        assert teams[label].status is TeamStatus.UNKNOWN
    assert fake.calls(fleet.keys["already"]) == 0
    assert not any(key in json.dumps(out) for key in fleet.keys.values())


def test_a_probe_without_a_genuine_answer_keeps_what_was_known(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
) -> None:
    fleet = install(deps, fake, settings, {account(): (OPSGENIE, {"a": KeyScenario("valid")})})
    assert cli("migration", "report", "--org", str(fleet.org))[0] == 0
    first = teams_of(deps, fleet)["a"]
    fake.set_host("jsm-ops", "html_404")  # a proxy answers for JSM Ops
    try:
        code, out = cli("migration", "report", "--org", str(fleet.org))
    finally:
        fake.set_host("jsm-ops", None)

    assert code == 0
    assert out["probed"] == {"teams": 1, "works": 0, "fails": 0, "unknown": 1}
    assert out["organizations"][0] | {"days_left": 0} == {
        "organization_id": fleet.org,
        "teams": 1,
        "works": 1,
        "fails": 0,
        "unknown": 0,
        "days_left": 0,
        "deadline": END_OF_SUPPORT,
    }
    again = teams_of(deps, fleet)["a"]
    assert (again.jsm_ops, again.jsm_ops_checked_at) == ("works", first.jsm_ops_checked_at)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_report_waits_out_a_pause_the_workers_share_in_redis(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
    redis_url: str,
) -> None:
    fleet = install(deps, fake, settings, {account(): (OPSGENIE, {"a": KeyScenario("valid")})})
    [integration] = fleet.integrations.values()
    # A worker met a 429 from this account on JSM Ops a moment ago (the key locate() uses).
    shared = redis.Redis.from_url(redis_url)
    shared.set(f"{NAMESPACE}:pause:jsm-ops:search:integration:{integration}", b"1", px=1500)
    shared.close()
    started = time.monotonic()

    code, out = cli("migration", "report", "--org", str(fleet.org))

    assert (code, out["probed"]) == (0, {"teams": 1, "works": 1, "fails": 0, "unknown": 0})
    [probe] = [c for c in fake.requests() if c.key == fleet.keys["a"]]
    assert probe.at - started >= 1.4


def test_the_report_reads_per_organization_and_counts_never_probed_as_unknown(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings
) -> None:
    one = install(
        deps, fake, settings, {account(): (OPSGENIE, {"a": KeyScenario(), "b": KeyScenario()})}
    )
    two = install(deps, fake, settings, {account(): (OPSGENIE_EU, {"c": KeyScenario()})})
    with deps.sessions.begin() as session:
        session.execute(update(Team).where(Team.id == one.teams["a"]).values(jsm_ops="works"))
        session.execute(update(Team).where(Team.id == two.teams["c"]).values(jsm_ops="fails"))

    with deps.sessions() as session:
        found = readiness.report(session, today=date(2027, 1, 5))

    mine = [
        o for o in found.as_dict()["organizations"] if o["organization_id"] in (one.org, two.org)
    ]
    figures = {"days_left": 90, "deadline": END_OF_SUPPORT}
    assert mine == [
        {"organization_id": one.org, "teams": 2, "works": 1, "fails": 0, "unknown": 1} | figures,
        {"organization_id": two.org, "teams": 1, "works": 0, "fails": 1, "unknown": 0} | figures,
    ]
    assert (found.days_left, readiness.days_left(date(2027, 4, 6))) == (90, 0)


def test_the_text_report_fits_80_columns(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
) -> None:
    fleet = install(deps, fake, settings, {account(): (OPSGENIE, {"a": KeyScenario("jsm_only")})})
    [integration] = fleet.integrations.values()

    result = runner.invoke(app, ["migration", "report", "--org", str(fleet.org)])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert lines[0] == f"Opsgenie ends support on {END_OF_SUPPORT}: {days_left()} days left."
    assert lines[1] == "Asked JSM Operations about 1 teams: 1 work, 0 fail, 0 unknown."
    row = ["│", str(fleet.org), "│", "1", "│", "1", "│", "0", "│", "0", "│", END_OF_SUPPORT,
           "│", str(days_left()), "│"]  # fmt: skip
    assert row in [line.split() for line in lines]
    assert f"integrations {integration}." in " ".join(result.stdout.split())
    assert lines[-1] == "Move one with: ogv integration migrate --integration ID --to jsm-ops"
    assert fleet.keys["a"] not in result.output


def test_the_report_refuses_an_unknown_organization_and_a_jsm_host_off_the_allowlist(
    cli: Callable[..., tuple[int, Any]], monkeypatch: pytest.MonkeyPatch, fake: FakeOpsgenie
) -> None:
    assert cli("migration", "report", "--org", "999999999999") == (
        1,
        {
            "error": {
                "code": "not_found",
                "message": "organization 999999999999 has no integrations",
            }
        },
    )
    monkeypatch.delenv("OGV_JSM_OPS_BASE_URL")
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", fake.url + "," + fake.base_url_for("opsgenie-eu"))
    get_settings.cache_clear()

    code, out = cli("migration", "report")

    assert (code, out["error"]["code"]) == (1, "base_url_not_allowed")
    assert "https://api.atlassian.com/jsm/ops/integration/" in out["error"]["message"]


# -- the API read ---------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_api_reads_an_organizations_report_as_recorded(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings, redis_url: str
) -> None:
    fleet = mixed_fleet(deps, fake, settings)
    [us, _] = fleet.integrations.values()
    jsm_only = install(deps, fake, settings, {account(): (JSM_OPS, {"x": KeyScenario()})})
    probed = migration.probe_fleet(deps, organization_id=fleet.org, page_size=2)
    calls = len(fake.requests())
    client = ValidationClient(redis_url, settings.database_url, queue=NAMESPACE)
    path = f"/v1/organizations/{fleet.org}/migration"

    with client, ApiThread(client, ApiConfig(token=TOKEN, max_wait=1)) as server:
        answer = call(server.url, "GET", path)
        none_to_move = call(server.url, "GET", f"/v1/organizations/{jsm_only.org}/migration")
        refused = {
            p: call(server.url, "GET", p).body["error"]["code"]
            for p in (
                "/v1/organizations/987654321987/migration",
                "/v1/organizations/abc/migration",
                f"{path}?probe=1",
            )
        }
        anonymous = call(server.url, "GET", path, auth=False)

    assert probed == readiness.Probed(teams=5, works=2, fails=2, unknown=1)
    assert answer.status == 200
    assert answer.body == {
        "end_of_support": END_OF_SUPPORT,
        "days_left": days_left(),
        "organizations": [
            {
                "organization_id": fleet.org,
                "teams": 5,
                "works": 2,
                "fails": 2,
                "unknown": 1,
                "days_left": days_left(),
                "deadline": END_OF_SUPPORT,
            }
        ],
        "integrations": [
            {
                "integration_id": us,
                "account": next(iter(fleet.integrations)),
                "platform": "opsgenie",
                "teams": 5,
                "works": 2,
                "fails": 2,
                "unknown": 1,
                "ready": False,
                "migrated_on": None,
                "switched_off_on": None,
                "deadline": END_OF_SUPPORT,
                "deadline_reason": "end_of_support",
                "days_left": days_left(),
            }
        ],
    }
    assert none_to_move.body["organizations"] == [
        {
            "organization_id": jsm_only.org,
            "teams": 0,
            "works": 0,
            "fails": 0,
            "unknown": 0,
            "days_left": days_left(),
            "deadline": END_OF_SUPPORT,
        }
    ]
    assert none_to_move.body["integrations"] == []
    assert refused == {
        "/v1/organizations/987654321987/migration": "not_found",
        "/v1/organizations/abc/migration": "invalid_request",
        f"{path}?probe=1": "invalid_request",
    }
    assert anonymous.status == 401
    assert len(fake.requests()) == calls  # reading probes nothing


# -- migrate ------------------------------------------------------------------------------


def moves_of(deps: Collaborators, integration: int) -> list[dict[str, Any]]:
    with deps.sessions() as session:
        rows = session.scalars(
            select(IntegrationMove).where(IntegrationMove.integration_id == integration)
        ).all()
    return [
        {
            "from_platform": r.from_platform,
            "to_platform": r.to_platform,
            "from_base_url": r.from_base_url,
            "to_base_url": r.to_base_url,
            "teams": r.teams,
            "teams_ready": r.teams_ready,
            "forced": r.forced,
        }
        for r in rows
    ]


def integration_row(deps: Collaborators, integration: int) -> tuple[str, str, str | None]:
    with deps.sessions() as session:
        row = session.get(Integration, integration)
        assert row is not None
        return row.platform, row.base_url, row.probe


def test_migrate_refuses_until_every_key_works_on_jsm_ops_then_moves(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = account()
    fleet = install(
        deps,
        fake,
        settings,
        {
            name: (
                OPSGENIE,
                {
                    "moved": KeyScenario("jsm_only"),
                    "both": KeyScenario("valid"),
                    "late": KeyScenario("invalid_key"),
                },
            )
        },
    )
    [integration] = fleet.integrations.values()
    migrate = ("integration", "migrate", "--integration", str(integration), "--to", "jsm-ops")
    jsm_url, us_url = fake.base_url_for("jsm-ops"), fake.url

    never_probed = cli(*migrate)
    assert cli("migration", "report", "--org", str(fleet.org))[0] == 0
    one_fails = cli(*migrate)
    dry_run = cli(*migrate, "--dry-run", "--force")

    def not_ready(count: int) -> tuple[int, Any]:
        return (
            1,
            {
                "error": {
                    "code": "not_ready",
                    "message": f"{count} of 3 teams of integration {integration} ({name!r}) "
                    "do not work on JSM Operations yet, as last probed; run `ogv migration "
                    "report` first, or pass --force",
                }
            },
        )

    assert never_probed == not_ready(3)
    assert one_fails == not_ready(1)
    move = {
        "integration_id": integration,
        "organization_id": fleet.org,
        "account": name,
        "from_platform": "opsgenie",
        "to_platform": "jsm-ops",
        "from_base_url": us_url,
        "to_base_url": jsm_url,
        "teams": 3,
        "teams_ready": 2,
        "forced": True,
        "dry_run": True,
        "moved_at": None,
    }
    assert dry_run == (0, move)
    assert integration_row(deps, integration) == ("opsgenie", us_url, None)
    assert moves_of(deps, integration) == []
    assert {team.key_version for team in teams_of(deps, fleet).values()} == {1}

    # The last key's account moves on Atlassian's side; the report sees it work there.
    fake.set_key(fleet.keys["late"], KeyScenario("jsm_only", account=name))
    assert cli("migration", "report", "--org", str(fleet.org))[0] == 0
    with caplog.at_level(logging.INFO, logger="ogv.migration"):
        code, moved = cli(*migrate)

    assert code == 0, moved
    assert moved == move | {
        "teams_ready": 3,
        "forced": False,
        "dry_run": False,
        "moved_at": moved["moved_at"],
    }
    assert datetime.fromisoformat(moved["moved_at"])
    assert integration_row(deps, integration) == ("jsm-ops", jsm_url, None)
    assert moves_of(deps, integration) == [
        {
            "from_platform": "opsgenie",
            "to_platform": "jsm-ops",
            "from_base_url": us_url,
            "to_base_url": jsm_url,
            "teams": 3,
            "teams_ready": 3,
            "forced": False,
        }
    ]
    assert {(t.key_version, t.works_on) for t in teams_of(deps, fleet).values()} == {(2, None)}
    [event] = [r for r in caplog.records if r.getMessage() == "integration.migrated"]
    assert {k: getattr(event, k) for k in ("integration_id", "from_platform", "to_platform",
            "teams", "teams_ready", "forced")} == {
        "integration_id": integration, "from_platform": "opsgenie", "to_platform": "jsm-ops",
        "teams": 3, "teams_ready": 3, "forced": False,
    }  # fmt: skip
    assert not any(key in caplog.text for key in fleet.keys.values())
    assert cli(*migrate)[1]["error"]["code"] == "already_migrated"

    # The next check of a moved team goes to JSM Ops, with the alerts probe.
    before = len(jsm_calls(fake, fleet.keys["both"]))
    step = run_attempt(request_for(deps, fleet, "both", integration), deps)

    assert isinstance(step, Finished) and step.result.outcome is Outcome.VALID
    assert jsm_calls(fake, fleet.keys["both"])[before:] == [ALERTS_ON_JSM]
    assert "JSM Operations" in step.result.message
    assert teams_of(deps, fleet)["both"].status is TeamStatus.VALID


def test_migrate_force_moves_teams_that_are_not_ready_and_says_so(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
) -> None:
    fleet = install(
        deps, fake, settings, {account(): (OPSGENIE_EU, {"a": KeyScenario(), "b": KeyScenario()})}
    )
    [integration] = fleet.integrations.values()

    code, out = cli(
        "integration", "migrate", "--integration", str(integration), "--to", "jsm-ops", "--force"
    )

    assert code == 0, out
    assert (out["from_platform"], out["teams"], out["teams_ready"], out["forced"]) == (
        "opsgenie-eu",
        2,
        0,
        True,
    )
    assert [m["forced"] for m in moves_of(deps, integration)] == [True]
    assert integration_row(deps, integration)[0] == "jsm-ops"


Refusal = Callable[[Fleet, Collaborators, Settings, pytest.MonkeyPatch, FakeOpsgenie], list[str]]


def _missing(*_: Any) -> list[str]:
    return ["--integration", "2000000000", "--to", "jsm-ops"]


def _already_there(fleet: Fleet, *_: Any) -> list[str]:
    return ["--integration", str(fleet.integrations["jsm"]), "--to", "jsm-ops"]


def _not_a_destination(fleet: Fleet, *_: Any) -> list[str]:
    return ["--integration", str(fleet.integrations["us"]), "--to", "opsgenie-eu"]


def _unknown_platform(fleet: Fleet, *_: Any) -> list[str]:
    return ["--integration", str(fleet.integrations["us"]), "--to", "bigpanda"]


def _jsm_not_allowed(
    fleet: Fleet, deps: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, fake: FakeOpsgenie
) -> list[str]:
    monkeypatch.delenv("OGV_JSM_OPS_BASE_URL")
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", fake.url + "," + fake.base_url_for("opsgenie-eu"))
    get_settings.cache_clear()
    return ["--integration", str(fleet.integrations["us"]), "--to", "jsm-ops", "--force"]


def _same_account_there(
    fleet: Fleet, deps: Collaborators, settings: Settings, *_: Any
) -> list[str]:
    with deps.sessions.begin() as session:
        us = session.get(Integration, fleet.integrations["us"])
        assert us is not None
        inventory.add_integration(
            session,
            organization_id=fleet.org,
            account_name=us.account_name,
            base_url=deps.options.base_urls["jsm-ops"],
            allowed_base_urls=settings.allowed_base_urls,
            platform=JSM_OPS,
        )
    return ["--integration", str(fleet.integrations["us"]), "--to", "jsm-ops", "--force"]


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (_missing, "not_found", "integration 2000000000 does not exist"),
        (_already_there, "already_migrated", "is already on jsm-ops"),
        (_not_a_destination, "invalid_platform", "can move only to jsm-ops"),
        (_unknown_platform, "invalid_platform", "unknown platform 'bigpanda'"),
        (_jsm_not_allowed, "base_url_not_allowed", "is not on OGV_ALLOWED_BASE_URLS"),
        (_same_account_there, "duplicate_integration", "already installed account"),
    ],
)
def test_migrate_refuses_in_one_line_and_changes_nothing(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    make: Refusal,
    code: str,
    message: str,
) -> None:
    fleet = install(
        deps,
        fake,
        settings,
        {account(): (OPSGENIE, {"a": KeyScenario()}), account(): (JSM_OPS, {"b": KeyScenario()})},
    )
    fleet.integrations = dict(zip(("us", "jsm"), fleet.integrations.values(), strict=True))
    args = ["integration", "migrate", *make(fleet, deps, settings, monkeypatch, fake)]

    as_json = cli(*args)
    as_text = runner.invoke(app, args)

    assert as_json[0] == 1 and set(as_json[1]["error"]) == {"code", "message"}
    assert as_json[1]["error"]["code"] == code
    assert message in as_json[1]["error"]["message"]
    assert as_text.exit_code == 1
    assert len(as_text.stderr.strip().splitlines()) == 1 and code in as_text.stderr
    assert "Traceback" not in as_text.output
    assert integration_row(deps, fleet.integrations["us"])[0] == "opsgenie"
    assert moves_of(deps, fleet.integrations["us"]) == []
    assert {team.key_version for team in teams_of(deps, fleet).values()} == {1}


def test_a_check_resolved_before_the_switch_does_not_write_after_it(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings
) -> None:
    # Refused on Opsgenie (a 401 that would turn the team invalid), fine on JSM Ops;
    # slow enough for the move to land while the old host is still answering.
    fleet = install(
        deps,
        fake,
        settings,
        {account(): (OPSGENIE, {"a": KeyScenario("jsm_only", latency_ms=800)})},
    )
    [integration] = fleet.integrations.values()
    steps: list[Any] = []
    stale = threading.Thread(
        target=lambda: steps.append(run_attempt(request_for(deps, fleet, "a", integration), deps))
    )
    stale.start()
    for _ in range(200):
        if fake.calls(fleet.keys["a"]):
            break
        threading.Event().wait(0.01)
    with deps.sessions.begin() as session:
        migration.move_integration(
            session,
            integration,
            "jsm-ops",
            base_urls=deps.options.base_urls,
            allowed_base_urls=settings.allowed_base_urls,
            force=True,
        )
    stale.join(10)

    [step] = steps
    assert isinstance(step, Finished) and step.result.outcome is Outcome.INVALID_KEY
    team = teams_of(deps, fleet)["a"]
    assert (team.status, team.last_checked_at, team.key_version) == (TeamStatus.UNKNOWN, None, 2)

    fresh = run_attempt(request_for(deps, fleet, "a", integration), deps)

    assert isinstance(fresh, Finished) and fresh.result.outcome is Outcome.VALID
    assert teams_of(deps, fleet)["a"].status is TeamStatus.VALID


# -- OGV_MIGRATION_PROBE --------------------------------------------------------------------


@pytest.mark.parametrize("probe_on", [True, False])
def test_the_migration_probe_records_jsm_ops_during_checks(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings, probe_on: bool
) -> None:
    deps = replace(deps, options=replace(deps.options, migration_probe=probe_on))
    fleet = install(
        deps,
        fake,
        settings,
        {
            account(): (
                OPSGENIE,
                {
                    "moved": KeyScenario("jsm_only"),
                    "both": KeyScenario("valid"),
                    "eu": KeyScenario("eu_only"),
                },
            ),
            account(): (JSM_OPS, {"already": KeyScenario("valid")}),
        },
    )
    us, jsm = fleet.integrations.values()
    integration_of = {"moved": us, "both": us, "eu": us, "already": jsm}

    steps = {
        label: run_attempt(request_for(deps, fleet, label, integration), deps)
        for label, integration in integration_of.items()
    }

    outcomes = {label: s.result.outcome for label, s in steps.items() if isinstance(s, Finished)}
    assert outcomes == {
        "moved": Outcome.INVALID_KEY,
        "both": Outcome.VALID,
        "eu": Outcome.INVALID_KEY,
        "already": Outcome.VALID,
    }
    teams = teams_of(deps, fleet)
    statuses = {label: team.status.value for label, team in teams.items()}
    assert statuses == {
        "moved": "invalid_key",
        "both": "valid",
        "eu": "invalid_key",
        "already": "valid",
    }
    expected = {"moved": "works", "both": "works", "eu": "fails", "already": None}
    assert jsm_ops_of(deps, fleet) == (expected if probe_on else dict.fromkeys(expected))
    assert all(
        (teams[label].jsm_ops_checked_at == teams[label].last_checked_at) == probe_on
        for label in ("moved", "both", "eu")
    )
    # A team on JSM Ops already is checked there once, with no extra probe.
    assert jsm_calls(fake, fleet.keys["already"]) == [ALERTS_ON_JSM]


def test_the_migration_probe_never_fails_a_check_nor_forgets_a_verdict(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings
) -> None:
    deps = replace(deps, options=replace(deps.options, migration_probe=True))
    fleet = install(deps, fake, settings, {account(): (OPSGENIE, {"a": KeyScenario("valid")})})
    [integration] = fleet.integrations.values()
    assert isinstance(run_attempt(request_for(deps, fleet, "a", integration), deps), Finished)
    fake.set_host("jsm-ops", "redirect")  # JSM Ops behind a login page for a while
    try:
        step = run_attempt(request_for(deps, fleet, "a", integration), deps)
    finally:
        fake.set_host("jsm-ops", None)

    assert isinstance(step, Finished)
    assert (step.result.outcome, step.result.jsm_ops) == (Outcome.VALID, "unknown")
    team = teams_of(deps, fleet)["a"]
    assert (team.status, team.jsm_ops) == (TeamStatus.VALID, "works")
    assert team.jsm_ops_checked_at is not None and team.last_checked_at is not None
    assert team.jsm_ops_checked_at < team.last_checked_at
