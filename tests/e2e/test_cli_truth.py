"""`ogv validate` and `ogv revalidate` against a real worker (the embedded default):
a verdict waiting for its second check is shown as `confirming`, with when that
check runs, and a run's held changes and tripped guard are shown beside its outcomes.

The session's fake Opsgenie answers 401 for the keys these tests make; their teams
start `valid` (written so in the stack's database), as after an earlier check.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from models import Team, TeamStatus
from models.crypto import KeyVault
from models.db import session_factory
from tests.support.stacks import Stack, open_stack
from worker import inventory
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

CONFIRM_LATER = 600
"""Seconds before a second check on the stack that confirms slowly: past any wait here."""


@pytest.fixture(scope="module")
def confirming(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    stack = open_stack(
        "embedded", request, tmp_path_factory, fake, OGV_CONFIRM_AFTER=str(CONFIRM_LATER)
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def guarded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """One answer decides, and the guard trips on the third change over three accounts."""
    stack = open_stack(
        "embedded", request, tmp_path_factory, fake,
        OGV_GUARD_MIN_CHANGES="3", OGV_GUARD_THRESHOLD="0.1",
    )  # fmt: skip
    yield stack
    stack.stop()


def valid_teams(stack: Stack, fake: FakeOpsgenie, accounts: int, org: int) -> list[str]:
    """One `valid` team per account of `org`, each with a key the fake refuses."""
    settings = Settings.model_validate(
        {
            "data_dir": stack.env["OGV_DATA_DIR"],
            "broker_url": "embedded",
            "allowed_base_urls": stack.env["OGV_ALLOWED_BASE_URLS"],
        }
    )
    vault = KeyVault(settings.fernet_keys())
    sessions = session_factory(f"sqlite:///{Path(stack.env['OGV_DATA_DIR']) / 'ogv.sqlite3'}")
    team_ids = []
    with sessions.begin() as session:
        for a in range(accounts):
            integration, _ = inventory.add_integration(
                session, organization_id=org, account_name=f"acct-{org}-{a}",
                base_url=fake.url, allowed_base_urls=settings.allowed_base_urls,
            )  # fmt: skip
            key = f"key-{uuid.uuid4()}"
            fake.set_key(key, KeyScenario("invalid_key"))
            team = inventory.add_team(
                session, organization_id=org, integration_id=integration.id, label="ops",
                integration_key=key, vault=vault,
            )  # fmt: skip
            team_ids.append(team.id)
        session.execute(update(Team).where(Team.id.in_(team_ids)).values(status=TeamStatus.VALID))
    return team_ids


def new_org() -> int:
    return uuid.uuid4().int % 10**9 + 1


def test_validate_returns_at_once_when_the_verdict_waits_for_its_second_check(
    confirming: Stack, fake: FakeOpsgenie
) -> None:
    org = new_org()
    [team_id] = valid_teams(confirming, fake, 1, org)
    integration = team_id.split("-", 1)[0]
    args = ["validate", "--org", str(org), "--integration", integration, "--team", team_id]

    asked = datetime.now(UTC)
    as_json = confirming.ogv(*args, "--wait", "120", "--json", timeout=100)
    text = confirming.ogv(*args, "--wait", "120", timeout=100)  # the same open request

    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    due = datetime.fromisoformat(view["second_check_at"])
    assert asked + timedelta(seconds=CONFIRM_LATER) <= due
    assert due <= datetime.now(UTC) + timedelta(seconds=CONFIRM_LATER)
    assert {k: view[k] for k in ("team_id", "state", "outcome", "http_status")} == {
        "team_id": team_id, "state": "confirming", "outcome": None, "http_status": 401,
    }  # fmt: skip
    assert view["message"].endswith(
        f" A second check at {due:%H:%M:%S} UTC must agree before the team's status changes."
    )
    assert text.returncode == 0, text.stderr
    assert text.stdout == (
        f"confirming: the second check at {due:%Y-%m-%d %H:%M:%S} UTC must agree; "
        f"{view['message']}\n"
    )
    status = json.loads(confirming.ogv("status", "--org", str(org), "--json").stdout)
    assert status["summary"]["valid"] == 1  # kept while confirming


def test_revalidate_counts_the_checks_that_wait_for_their_second(
    confirming: Stack, fake: FakeOpsgenie
) -> None:
    org = new_org()
    valid_teams(confirming, fake, 3, org)

    done = confirming.ogv("revalidate", "--org", str(org), "--timeout", "20", timeout=100)

    assert done.returncode == 2
    run_id = re.fullmatch(r"run (\S+): .*", done.stdout.splitlines()[0])
    assert run_id is not None
    assert done.stdout == f"run {run_id[1]}: 0 of 3 checks finished\n  confirming  3\n"
    assert "validating, 3 confirming" in done.stderr
    assert done.stderr.endswith(f"error (timeout): run {run_id[1]} is not finished after 20.0s\n")


def test_revalidate_shows_the_changes_held_and_the_tripped_guard(
    guarded: Stack, fake: FakeOpsgenie
) -> None:
    org = new_org()
    valid_teams(guarded, fake, 4, org)

    done = guarded.ogv("revalidate", "--org", str(org), timeout=120)
    again = guarded.ogv("revalidate", "--org", str(org), "--json", timeout=120)
    listed = json.loads(guarded.ogv("changes", "list", "--json").stdout)
    status = json.loads(guarded.ogv("status", "--org", str(org), "--json").stdout)

    # The third change over three accounts trips the guard: two written, two held.
    assert done.returncode == 0, done.stderr
    [guard] = listed["guard"]
    since = datetime.fromisoformat(guard["tripped_at"])
    run_id = done.stdout.split()[1].rstrip(":")
    assert done.stdout == (
        f"run {run_id}: 4 of 4 checks finished\n"
        "  invalid_key  4 (2 held by the guard: those teams stay valid)\n"
        f"guard: tripped for {fake.url} since {since:%Y-%m-%d %H:%M:%S} UTC; 2 changes held"
        " — `ogv changes list`\n"
    )
    # Checked again: the two held teams are still valid, so held again; the rest stay.
    report = json.loads(again.stdout)
    assert {k: report[k] for k in ("requests", "finished", "outcomes", "held")} == {
        "requests": 4, "finished": 4, "outcomes": {"invalid_key": 4}, "held": {"invalid_key": 2},
    }  # fmt: skip
    assert [(g["base_url"], g["tripped"], g["held"]) for g in report["tripped_guards"]] == [
        (fake.url, True, 2)
    ]
    assert {k: v for k, v in status["summary"].items() if v} == {"valid": 2, "invalid_key": 2}
