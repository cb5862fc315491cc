"""Confirmation and the mass-change guard through real processes: a worker on the embedded
default and on Redis with PostgreSQL, the `ogv` command line, a webhook receiver, and a
fake Opsgenie of this module's own whose hosts can start answering 401 to every key."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import (
    HeldChange,
    Outcome,
    RequestState,
    Team,
    TeamStatus,
    TeamStatusChange,
    ValidationRequest,
)
from models.crypto import KeyVault
from models.db import session_factory
from tests.support.services import ARTIFACTS, NAMESPACE
from tests.support.stacks import Stack, ogv_command, open_stack, wait_until
from tests.support.webhooks import WebhookReceiver
from worker import inventory
from worker.platforms import OPSGENIE, OPSGENIE_EU, Platform
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario, Scenario

CONFIRM_AFTER = 1.0
FLEET = {"embedded": (300, 15), "redis-postgres": (1000, 50)}
"""Teams and accounts of the storm's fleet on each stack."""


@pytest.fixture(scope="module")
def storm() -> Iterator[FakeOpsgenie]:
    """A fake of this module's own: every key answers valid until a host is told not to."""
    with FakeOpsgenie(Scenario(default=KeyScenario("valid"))) as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["embedded", "redis-postgres"])
def guarded(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    storm: FakeOpsgenie,
    receiver: WebhookReceiver,
) -> Iterator[Stack]:
    """A stack whose checks confirm failing verdicts after a second and whose guard has
    the default thresholds; its windows are its own (its own queue and Redis prefix)."""
    stack = open_stack(
        request.param,
        request,
        tmp_path_factory,
        storm,
        OGV_NAMESPACE=f"{NAMESPACE}-guard",
        OGV_CONFIRM_AFTER=str(CONFIRM_AFTER),
        OGV_STATUS_WEBHOOK_URL=receiver.url,
        OGV_ACCOUNT_RATE="20",
        OGV_BATCH_SIZE="100",
    )
    yield stack
    stack.stop()


@dataclass
class Fleet:
    organization_id: int
    base_url: str
    teams: dict[str, str]
    """Team id → its key."""
    integrations: dict[str, int]
    """Team id → its integration (account)."""


def sessions_of(stack: Stack) -> sessionmaker[Session]:
    return session_factory(stack.database_url)


def install_fleet(
    stack: Stack, base_url: str, platform: Platform, teams: int, accounts: int
) -> Fleet:
    """`teams` teams spread evenly over `accounts` accounts of one new organization,
    written straight to the stack's database (the worker reads them from there)."""
    settings = Settings.model_validate(
        {
            "data_dir": stack.env["OGV_DATA_DIR"],
            "database_url": stack.env.get("OGV_DATABASE_URL", ""),
            "broker_url": "embedded",
            "encryption_keys": stack.env.get("OGV_ENCRYPTION_KEYS", ""),
            "allowed_base_urls": stack.env["OGV_ALLOWED_BASE_URLS"],
        }
    )
    vault = KeyVault(settings.fernet_keys())
    org = uuid.uuid4().int % 10**9 + 1
    fleet = Fleet(org, base_url, {}, {})
    with sessions_of(stack).begin() as session:
        for a in range(accounts):
            account = f"acct-{org}-{a}"
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=account,
                base_url=base_url,
                allowed_base_urls=settings.allowed_base_urls,
                platform=platform,
            )
            for t in range(teams // accounts):
                key = f"key-{uuid.uuid4()}"
                team = inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=f"team-{t}",
                    integration_key=key,
                    vault=vault,
                )
                fleet.teams[team.id], fleet.integrations[team.id] = key, integration.id
    return fleet


def ogv_json(stack: Stack, *args: str, timeout: float = 180) -> Any:
    done = stack.ogv(*args, "--json", timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def statuses(stack: Stack, fleet: Fleet) -> dict[str, int]:
    with sessions_of(stack)() as session:
        rows = session.execute(
            select(Team.status, func.count())
            .where(Team.id.in_(list(fleet.teams)))
            .group_by(Team.status)
        ).all()
    return {status.value: count for status, count in rows}


def held_of(stack: Stack, fleet: Fleet) -> list[HeldChange]:
    with sessions_of(stack)() as session:
        return list(
            session.scalars(select(HeldChange).where(HeldChange.team_id.in_(list(fleet.teams))))
        )


def open_requests(stack: Stack, fleet: Fleet) -> int:
    with sessions_of(stack)() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(ValidationRequest)
                .where(
                    ValidationRequest.organization_id == fleet.organization_id,
                    ValidationRequest.state.in_(
                        (RequestState.PENDING, RequestState.RUNNING, RequestState.CONFIRMING)
                    ),
                )
            )
            or 0
        )


def log_events(stack: Stack, event: str) -> list[dict[str, Any]]:
    found = []
    for line in stack.worker_log.read_text(errors="replace").splitlines():
        if event in line and line.startswith("{"):
            record = json.loads(line)
            if record.get("event", record.get("message")) == event:
                found.append(record)
    return found


# --- confirmation ------------------------------------------------------------------------


def one_valid_team(stack: Stack, storm: FakeOpsgenie) -> tuple[Fleet, str]:
    fleet = install_fleet(stack, storm.url, OPSGENIE, 1, 1)
    (team_id,) = fleet.teams
    assert validate(stack, fleet, team_id)["outcome"] == "valid"
    return fleet, team_id


def validate_args(fleet: Fleet, team_id: str) -> list[str]:
    integration = str(fleet.integrations[team_id])
    org = str(fleet.organization_id)
    return ["validate", "--org", org, "--integration", integration, "--team", team_id]


def validate(stack: Stack, fleet: Fleet, team_id: str) -> Any:
    return ogv_json(stack, *validate_args(fleet, team_id), "--wait", "60")


def start_validate(stack: Stack, fleet: Fleet, team_id: str) -> subprocess.Popen[str]:
    """`ogv validate` waiting for the outcome, left running while the test goes on."""
    return subprocess.Popen(
        [*ogv_command(), *validate_args(fleet, team_id), "--wait", "60", "--json"],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def latest_request(stack: Stack, team_id: str) -> ValidationRequest | None:
    with sessions_of(stack)() as session:
        return session.scalars(
            select(ValidationRequest)
            .where(ValidationRequest.team_id == team_id)
            .order_by(ValidationRequest.created_at.desc())
        ).first()


def wait_for_state(stack: Stack, team_id: str, state: RequestState) -> ValidationRequest:
    found: list[ValidationRequest] = []

    def seen() -> bool:
        request = latest_request(stack, team_id)
        if request is not None and request.state is state:
            found.append(request)
        return bool(found)

    wait_until(seen, timeout=30)
    return found[0]


def test_a_key_that_fails_once_and_answers_after_stays_valid(
    guarded: Stack, storm: FakeOpsgenie
) -> None:
    fleet, team_id = one_valid_team(guarded, storm)
    key = fleet.teams[team_id]
    storm.set_key(key, KeyScenario("invalid_key"))
    running = start_validate(guarded, fleet, team_id)
    confirming = wait_for_state(guarded, team_id, RequestState.CONFIRMING)
    assert confirming.confirming_outcome is Outcome.INVALID_KEY
    storm.set_key(key, KeyScenario("valid"))
    out, err = running.communicate(timeout=60)
    assert running.returncode == 0, err
    assert json.loads(out)["outcome"] == "valid"
    request = latest_request(guarded, team_id)
    assert request is not None and request.confirmation == "disagreed"
    assert statuses(guarded, fleet) == {"valid": 1}
    assert any(
        e["request_id"] == str(request.id) for e in log_events(guarded, "validation.disagreed")
    )
    assert key not in guarded.worker_log.read_text(errors="replace")


def test_a_key_that_fails_twice_turns_invalid_after_the_delay(
    guarded: Stack, storm: FakeOpsgenie
) -> None:
    fleet, team_id = one_valid_team(guarded, storm)
    storm.set_key(fleet.teams[team_id], KeyScenario("invalid_key"))
    started = time.monotonic()
    running = start_validate(guarded, fleet, team_id)
    wait_for_state(guarded, team_id, RequestState.CONFIRMING)
    assert statuses(guarded, fleet) == {"valid": 1}  # kept while confirming
    out, err = running.communicate(timeout=60)
    assert running.returncode == 0, err
    assert json.loads(out)["outcome"] == "invalid_key"
    assert time.monotonic() - started >= CONFIRM_AFTER
    request = latest_request(guarded, team_id)
    assert request is not None and request.confirmation == "confirmed"
    assert statuses(guarded, fleet) == {"invalid_key": 1}


# --- the guard -----------------------------------------------------------------------------


def revalidate(stack: Stack, fleet: Fleet, *extra: str) -> Any:
    return ogv_json(stack, "revalidate", "--org", str(fleet.organization_id), *extra)


@pytest.mark.timeout(300)
def test_one_account_revoking_all_of_its_keys_changes_every_team_and_trips_nothing(
    guarded: Stack, storm: FakeOpsgenie, receiver: WebhookReceiver
) -> None:
    fleet = install_fleet(guarded, storm.url, OPSGENIE, 100, 1)
    since = len(receiver.received)
    assert revalidate(guarded, fleet)["outcomes"] == {"valid": 100}
    for key in fleet.teams.values():
        storm.set_key(key, KeyScenario("invalid_key"))
    revalidate(guarded, fleet, "--no-wait")
    wait_until(lambda: open_requests(guarded, fleet) == 0, timeout=240)
    assert statuses(guarded, fleet) == {"invalid_key": 100}
    assert held_of(guarded, fleet) == []
    assert trips_of(receiver, storm.url, since) == []
    listed = ogv_json(guarded, "changes", "list", "--base-url", storm.url)
    assert listed["held"] == []


@pytest.mark.timeout(600)
def test_a_401_storm_trips_the_guard_once_and_holds_every_change_past_its_allowance(
    guarded: Stack, storm: FakeOpsgenie, receiver: WebhookReceiver
) -> None:
    teams, accounts = FLEET[guarded.name]
    base_url = storm.base_url_for("opsgenie-eu")
    fleet = install_fleet(guarded, base_url, OPSGENIE_EU, teams, accounts)
    since = len(receiver.received)
    assert revalidate(guarded, fleet)["outcomes"] == {"valid": teams}

    # The storm: a re-validation run, and mid-run every call to the host answers 401.
    run = revalidate(guarded, fleet, "--no-wait")
    wait_until(lambda: finished_in(guarded, run["run_id"]) >= teams // 4, timeout=120)
    storm.set_host("opsgenie-eu", "invalid_key")
    try:
        wait_until(lambda: open_requests(guarded, fleet) == 0, timeout=300)
        counts = statuses(guarded, fleet)
        held = held_of(guarded, fleet)
        written = counts.get("invalid_key", 0)
        wait_until(lambda: trips_of(receiver, base_url, since), timeout=60)  # a task posts it
        trips = trips_of(receiver, base_url, since)
        assert len(trips) == 1, trips
        assert len(log_events(guarded, "guard.tripped")) == 1
        trip = trips[0]
        # The change that tripped it was the first held; nothing past the allowance.
        assert written == trip["changes"] - 1
        assert written <= 0.2 * trip["checks"] and trip["accounts"] >= 3
        assert len(held) > 0 and written + counts.get("valid", 0) == teams
        # Every team the storm reached ends written or held: none is lost or doubled.
        assert written + len(held) == outcomes_in(guarded, run["run_id"])["invalid_key"]
        assert {h.base_url for h in held} == {base_url}
        assert all(h.http_status == 401 and h.new_status is TeamStatus.INVALID_KEY for h in held)
        assert not any(fleet.teams[h.team_id] in (h.message or "") for h in held)

        unhealthy = guarded.ogv("health", "--timeout", "20")
        assert unhealthy.returncode != 0 and "guard" in unhealthy.stdout
        listed = ogv_json(guarded, "changes", "list", "--base-url", base_url)
        assert len(listed["held"]) == len(held)

        # Release a few: their status, history and webhook go out as any change's.
        chosen = sorted(h.team_id for h in held)[:10]
        picks = [arg for team_id in chosen for arg in ("--team", team_id)]
        released = ogv_json(guarded, "changes", "release", *picks)
        assert released["released"] == len(chosen)
        assert_released(guarded, receiver, chosen, held, since)
        rest = len(held) - len(chosen)
    finally:
        storm.set_host("opsgenie-eu", None)

    # Discard the rest: the upstream recovered, so their re-checks find them valid.
    discarded = ogv_json(guarded, "changes", "discard", "--base-url", base_url)
    assert discarded["discarded"] == rest
    wait_until(lambda: open_requests(guarded, fleet) == 0, timeout=120)
    assert held_of(guarded, fleet) == []
    final = statuses(guarded, fleet)
    assert final == {"invalid_key": written + len(chosen), "valid": teams - written - len(chosen)}
    record_figures(
        guarded.name,
        {
            "teams": teams,
            "accounts": accounts,
            "checked_in_the_storm_run": teams,
            "window_at_trip": {k: trip[k] for k in ("checks", "changes", "accounts")},
            "written_before_the_trip": written,
            "held": len(held),
            "released": len(chosen),
            "discarded": rest,
        },
    )


def trips_of(receiver: WebhookReceiver, base_url: str, since: int = 0) -> list[dict[str, Any]]:
    """The `guard.tripped` documents about `base_url` received after the first `since`
    (the receiver serves both stacks, whose fake is one)."""
    return [
        d
        for d in receiver.received[since:]
        if d.get("event") == "guard.tripped" and d["base_url"] == base_url
    ]


def outcomes_in(stack: Stack, run_id: str) -> dict[str, int]:
    with sessions_of(stack)() as session:
        rows = session.execute(
            select(ValidationRequest.outcome, func.count())
            .where(ValidationRequest.run_id == uuid.UUID(run_id))
            .group_by(ValidationRequest.outcome)
        ).all()
    return {outcome.value: count for outcome, count in rows if outcome is not None}


def finished_in(stack: Stack, run_id: str) -> int:
    with sessions_of(stack)() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(ValidationRequest)
                .where(
                    ValidationRequest.run_id == uuid.UUID(run_id),
                    ValidationRequest.state.in_((RequestState.DONE, RequestState.FAILED)),
                )
            )
            or 0
        )


def assert_released(
    stack: Stack,
    receiver: WebhookReceiver,
    chosen: list[str],
    held: list[HeldChange],
    since: int,
) -> None:
    requests = {h.team_id: h.request_id for h in held}
    with sessions_of(stack)() as session:
        rows = session.scalars(
            select(TeamStatusChange).where(TeamStatusChange.team_id.in_(chosen))
        ).all()
        changed = {r.team_id: r for r in rows if r.new_status is TeamStatus.INVALID_KEY}
        teams = session.scalars(select(Team).where(Team.id.in_(chosen))).all()
    assert set(changed) == set(chosen)
    assert all(changed[t].request_id == requests[t] for t in chosen)
    assert all(t.status is TeamStatus.INVALID_KEY for t in teams)

    def documents() -> list[dict[str, Any]]:
        return [
            d
            for d in receiver.received[since:]
            if d.get("event") == "team.status_changed"
            and d["team_id"] in chosen
            and d["new_status"] == "invalid_key"
        ]

    wait_until(lambda: len(documents()) >= len(chosen), timeout=60)
    assert sorted(d["team_id"] for d in documents()) == sorted(chosen)


def record_figures(stack: str, figures: dict[str, Any]) -> None:
    """The fleet's figures, kept with the run's artifacts (docs/RELIABILITY.md quotes one)."""
    path = ARTIFACTS / f"guard-fleet-{stack}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
