"""The sunset through the documented CLI and API: switch-off dates, deadlines and days left,
and the hints of a switched-off account's checks."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from models import Requester
from tests.support.api import TOKEN, ApiThread, call
from tests.support.services import NAMESPACE
from tests.support.stacks import FAST_RETRIES, platform_env
from worker import inventory
from worker.checks import requests
from worker.checks.pipeline import Collaborators, Finished, run_attempt
from worker.enqueue import get_request
from worker.operations.cli import app
from worker.platforms import OPSGENIE
from worker.platforms.sunset import today
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient

runner = CliRunner()
_orgs = itertools.count(8_000_000 + uuid.uuid4().int % 10_000 * 1000)


@pytest.fixture
def cli(
    settings: Settings,
    fernet_key: str,
    fake: FakeOpsgenie,
    ogv_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., tuple[int, Any]]]:
    """`ogv ... --json` in-process, on the test's database."""
    env = {
        **FAST_RETRIES,
        **platform_env(fake),
        "OGV_DATABASE_URL": settings.database_url,
        "OGV_ENCRYPTION_KEYS": fernet_key,
        "OGV_NAMESPACE": NAMESPACE,
        "OGV_BROKER_URL": "embedded",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()

    def run(*args: str) -> tuple[int, Any]:
        result = runner.invoke(app, [*args, "--json"])
        assert "Traceback" not in result.output
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None

    yield run
    get_settings.cache_clear()


def three_accounts(deps: Collaborators, fake: FakeOpsgenie, settings: Settings) -> dict[str, Any]:
    """One organization with three Opsgenie accounts, a team each: `migrated`, `off`, `plain`."""
    org = next(_orgs)
    found: dict[str, Any] = {"org": org, "keys": {}}
    behaviours = {"migrated": "valid", "off": "switched_off", "plain": "invalid_key"}
    with deps.sessions.begin() as session:
        for name, behaviour in behaviours.items():
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"{name}-{uuid.uuid4().hex[:8]}",
                base_url=deps.options.base_urls["opsgenie"],
                allowed_base_urls=settings.allowed_base_urls,
                platform=OPSGENIE,
            )
            key = found["keys"][name] = f"key-{uuid.uuid4()}"
            fake.set_key(key, KeyScenario(behaviour))
            team = inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=name,
                integration_key=key,
                vault=deps.vault,
            )
            found[name] = (integration.id, team.id)
    return found


def test_switch_off_dates_set_each_accounts_deadline_in_the_cli(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
) -> None:
    fleet = three_accounts(deps, fake, settings)
    now = today()
    hundred_days_ago, two_days_ago = now - timedelta(days=100), now - timedelta(days=2)
    migrated, off, plain = (fleet[name][0] for name in ("migrated", "off", "plain"))

    code, out = cli("integration", "update", str(migrated), "--migrated-on", str(hundred_days_ago))
    assert (code, out) == (
        0,
        {
            "integration_id": migrated,
            "platform": "opsgenie",
            "migrated_on": hundred_days_ago.isoformat(),
            "switched_off_on": None,
            "deadline": (now + timedelta(days=20)).isoformat(),
            "deadline_reason": "migrated",
            "days_left": 20,
        },
    )
    code, out = cli(
        "integration", "update", str(off), "--migrated-on", str(two_days_ago),
        "--switched-off-on", str(two_days_ago),
    )  # fmt: skip
    assert (code, out["deadline"], out["deadline_reason"], out["days_left"]) == (
        0,
        two_days_ago.isoformat(),
        "switched_off",
        0,
    )
    # A day recorded by mistake is cleared with `none`.
    assert cli("integration", "update", str(plain), "--migrated-on", str(now))[0] == 0
    code, out = cli("integration", "update", str(plain), "--migrated-on", "none")
    end = date(2027, 4, 5)
    assert (code, out["migrated_on"], out["deadline"], out["deadline_reason"]) == (
        0,
        None,
        end.isoformat(),
        "end_of_support",
    )

    code, rows = cli("status", "--org", str(fleet["org"]))
    assert code == 0
    assert {row["label"]: (row["deadline"], row["days_left"]) for row in rows} == {
        "migrated": ((now + timedelta(days=20)).isoformat(), 20),
        "off": (two_days_ago.isoformat(), 0),
        "plain": (end.isoformat(), max(0, (end - now).days)),
    }
    # Never checked (status unknown): nothing to do yet, whatever the deadline.
    assert [row["hint"] for row in rows] == [None, None, None]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--migrated-on", "yesterday"], "invalid", "YYYY-MM-DD"),
        ([], "invalid", "--migrated-on"),
        (["--migrated-on", "2026-10-01", "--switched-off-on", "2026-09-01"], "invalid", "before"),
    ],
)
def test_integration_update_refuses_bad_days_in_one_line(
    cli: Callable[..., tuple[int, Any]],
    deps: Collaborators,
    fake: FakeOpsgenie,
    settings: Settings,
    args: list[str],
    code: str,
    words: str,
) -> None:
    integration = three_accounts(deps, fake, settings)["plain"][0]
    exit_code, out = cli("integration", "update", str(integration), *args)
    assert (exit_code, out["error"]["code"]) == (1, code)
    assert words in out["error"]["message"] and "\n" not in out["error"]["message"]
    assert (
        cli("integration", "update", "999999999", "--migrated-on", "2026-01-01")[1]["error"]["code"]
        == "not_found"
    )


def check(deps: Collaborators, org: int, integration: int, team: str) -> uuid.UUID:
    with deps.sessions.begin() as session:
        request, _ = requests.create_request(
            session,
            organization_id=org,
            integration_id=integration,
            team_id=team,
            requested_by=Requester.CLI,
        )
        request_id = request.id
    assert isinstance(run_attempt(request_id, deps), Finished)
    return request_id


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_after_the_switch_off_a_401_is_the_platforms_not_the_keys(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings, redis_url: str
) -> None:
    fleet = three_accounts(deps, fake, settings)
    with deps.sessions.begin() as session:
        yesterday = today() - timedelta(days=1)
        inventory.update_dates(session, fleet["off"][0], switched_off_on=yesterday)
    asked = {name: check(deps, fleet["org"], *fleet[name]) for name in ("off", "plain")}
    client = ValidationClient(redis_url, settings.database_url)

    with client, ApiThread(client, ApiConfig(token=TOKEN, max_wait=1)) as server:
        answers = {
            name: call(server.url, "GET", f"/v1/validations/{request_id}").body
            for name, request_id in asked.items()
        }
        teams = {
            name: call(server.url, "GET", f"/v1/teams/{fleet[name][1]}").body
            for name in ("off", "plain")
        }

    # The same 401 on both; only the switched-off account's is about the platform.
    assert {n: (a["outcome"], a["http_status"]) for n, a in answers.items()} == {
        "off": ("invalid_key", 401),
        "plain": ("invalid_key", 401),
    }
    assert {n: a["hint"]["code"] for n, a in answers.items()} == {
        "off": "platform_retired",
        "plain": "key_disabled_or_deleted",
    }
    assert "not the key" in answers["off"]["message"]
    assert yesterday.isoformat() in answers["off"]["hint"]["text"]
    assert {n: (t["hint"]["code"], t["days_left"]) for n, t in teams.items()} == {
        "off": ("platform_retired", 0),
        "plain": ("key_disabled_or_deleted", teams["plain"]["days_left"]),
    }
    for name, key in fleet["keys"].items():
        assert key not in json.dumps([answers, teams]), name
    view = get_request(deps.sessions, asked["off"])  # what `ogv validate --wait` prints
    assert view is not None and view.hint is not None and view.hint.code == "platform_retired"
