"""One attempt at a request, every branch of SPEC §3 and §5, without Celery.

The pipeline runs in-process against a real database (SQLite and PostgreSQL) and
the real fake Opsgenie over HTTP; only the task adapter is left out.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from models import (
    IntegrationStatus,
    OrganizationIntegration,
    Outcome,
    RequestState,
    Team,
    TeamStatus,
    TeamStatusChange,
    utcnow,
)
from models.crypto import KeyVault
from tests.support.pipeline import Install, load, request_for
from worker import inventory
from worker.checks import records
from worker.checks.pipeline import AlreadyFinal, Collaborators, Finished, RetryLater, run_attempt
from worker.checks.ratelimit import LocalGate
from worker.checks.runtime import Runtime
from worker.platforms import OPSGENIE
from worker.platforms.hints import Facts, hint_for
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario


def run_to_end(deps: Collaborators, request_id: uuid.UUID, limit: int = 10) -> Finished:
    """Run attempts the way the task would; a fresh gate stands for a pause gone by."""
    for _ in range(limit):
        step = run_attempt(request_id, deps)
        if isinstance(step, Finished):
            return step
        assert isinstance(step, RetryLater)
        deps = replace(deps, gate=LocalGate())
    raise AssertionError("the request never finished")


VERDICTS = [
    (KeyScenario("valid"), Outcome.VALID, 200, None),
    (KeyScenario("invalid_key"), Outcome.INVALID_KEY, 401, None),
    (KeyScenario("no_access"), Outcome.KEY_LACKS_ACCESS, 403, "opsgenie_40301"),
    (KeyScenario("unprocessable"), Outcome.REJECTED, 422, None),
]


@pytest.mark.parametrize(("scenario", "outcome", "http_status", "error_code"), VERDICTS)
def test_final_answers_set_the_team_status(
    deps: Collaborators,
    install: Install,
    fake: FakeOpsgenie,
    scenario: KeyScenario,
    outcome: Outcome,
    http_status: int,
    error_code: str | None,
) -> None:
    team = install(scenario, label="payments")
    request_id = request_for(deps, team)

    step = run_attempt(request_id, deps)

    assert isinstance(step, Finished)
    assert step.result.outcome is outcome
    request, row = load(deps, request_id)
    assert (request.state, request.outcome, request.http_status, request.attempts) == (
        RequestState.DONE,
        outcome,
        http_status,
        1,
    )
    assert request.error_code == error_code
    assert "payments" in (request.message or "") and f"acct-{team.organization_id}" in (
        request.message or ""
    )
    assert row is not None
    assert (row.status, row.last_http_status, row.last_error_code) == (
        TeamStatus(outcome.value),
        http_status,
        error_code,
    )
    assert row.last_checked_at is not None and row.status_changed_at == row.last_checked_at
    assert fake.calls(team.key) == 1


def test_rejected_carries_opsgenies_message(deps: Collaborators, install: Install) -> None:
    team = install(KeyScenario("unprocessable"))
    step = run_to_end(deps, request_for(deps, team))
    assert step.result.outcome is Outcome.REJECTED
    assert "HTTP 422" in step.result.message
    assert team.key not in step.result.message


def test_missing_integration_is_decided_without_calling_opsgenie(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("valid"))
    request_id = request_for(deps, team, integration_id=team.integration_id + 10_000)

    step = run_to_end(deps, request_id)

    assert step.result.outcome is Outcome.INVALID_INTEGRATION
    assert step.result.message.startswith("The Opsgenie integration")
    assert fake.calls(team.key) == 0


def test_other_organizations_integration_is_invalid(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("valid"))
    request_id = request_for(deps, team, organization_id=team.organization_id + 1)
    assert run_to_end(deps, request_id).result.outcome is Outcome.INVALID_INTEGRATION
    assert fake.calls(team.key) == 0


def test_disabled_link_is_an_invalid_integration(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("valid"))
    with deps.sessions.begin() as session:
        session.execute(
            update(OrganizationIntegration)
            .where(OrganizationIntegration.organization_id == team.organization_id)
            .values(status=IntegrationStatus.DISABLED)
        )
    result = run_to_end(deps, request_for(deps, team)).result
    assert (result.outcome, result.error_code) == (
        Outcome.INVALID_INTEGRATION,
        "integration_disabled",
    )
    assert "is disabled: enable it" in result.message and "does not exist" not in result.message
    hint = hint_for(Facts("invalid_integration", error_code=result.error_code))
    assert hint is not None and hint.code == "integration_disabled"
    assert "ogv integration enable" in hint.text
    assert fake.calls(team.key) == 0


@pytest.mark.parametrize("team_id", ["", "0-nobody", "{link}-other-label"])
def test_unknown_or_empty_team_is_invalid_team(
    deps: Collaborators, install: Install, fake: FakeOpsgenie, team_id: str
) -> None:
    team = install(KeyScenario("valid"), account="acme")
    link_id = team.team_id.split("-", 1)[0]
    request_id = request_for(deps, team, team_id=team_id.format(link=link_id))

    step = run_to_end(deps, request_id)

    assert step.result.outcome is Outcome.INVALID_TEAM
    assert "'acme'" in step.result.message
    assert fake.calls(team.key) == 0


def test_team_of_another_link_is_invalid_team(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    mine, theirs = install(KeyScenario("valid")), install(KeyScenario("valid"))
    request_id = request_for(deps, mine, team_id=theirs.team_id)
    assert run_to_end(deps, request_id).result.outcome is Outcome.INVALID_TEAM
    assert fake.calls(theirs.key) == 0


@pytest.mark.parametrize(
    "scenario",
    [
        KeyScenario("server_error", times=2),
        KeyScenario("server_error", times=2, status=502),
        KeyScenario("throttle", times=2, period_seconds=1),
    ],
    ids=["503", "502", "429"],
)
def test_transient_failures_are_retried_until_the_answer(
    deps: Collaborators, install: Install, fake: FakeOpsgenie, scenario: KeyScenario
) -> None:
    team = install(scenario)
    request_id = request_for(deps, team)

    first = run_attempt(request_id, deps)
    assert isinstance(first, RetryLater)
    request, row = load(deps, request_id)
    assert request.state is RequestState.PENDING and request.outcome is None
    assert row is not None and row.status is TeamStatus.UNKNOWN

    final = run_to_end(replace(deps, gate=LocalGate()), request_id)
    assert final.result.outcome is Outcome.VALID
    request, row = load(deps, request_id)
    assert request.attempts == 3 and request.state is RequestState.DONE
    assert row is not None and row.status is TeamStatus.VALID


def test_429_waits_the_period_opsgenie_names(deps: Collaborators, install: Install) -> None:
    team = install(KeyScenario("throttle", times=1, period_seconds=7))
    step = run_attempt(request_for(deps, team), deps)
    assert isinstance(step, RetryLater)
    assert 7 <= step.delay <= 7 * 1.25
    assert step.error.code == "throttled"


def test_429_pauses_the_whole_account(
    deps: Collaborators, install: Install, fake: FakeOpsgenie, settings: Settings
) -> None:
    throttled = install(KeyScenario("throttle", times=1, period_seconds=30), account="shared")
    sibling_key = f"key-{uuid.uuid4()}"
    fake.set_key(sibling_key, KeyScenario("valid"))
    with deps.sessions.begin() as session:
        sibling = inventory.add_team(
            session,
            organization_id=throttled.organization_id,
            integration_id=throttled.integration_id,
            label="sibling",
            integration_key=sibling_key,
            vault=deps.vault,
        )
        sibling_id = sibling.id

    assert isinstance(run_attempt(request_for(deps, throttled), deps), RetryLater)
    step = run_attempt(request_for(deps, throttled, team_id=sibling_id), deps)

    assert isinstance(step, RetryLater) and step.delay > 20
    assert fake.calls(sibling_key) == 0


def test_exhausted_retries_end_in_error_and_keep_the_status(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("valid"))
    assert run_to_end(deps, request_for(deps, team)).result.outcome is Outcome.VALID
    fake.set_key(team.key, KeyScenario("server_error", times=-1))

    request_id = request_for(deps, team)
    final = run_to_end(deps, request_id)

    assert final.result.outcome is Outcome.ERROR
    request, row = load(deps, request_id)
    assert (request.state, request.attempts, request.http_status, request.error_code) == (
        RequestState.FAILED,
        3,
        503,
        "server_error",
    )
    assert row is not None
    assert (row.status, row.last_error_code, row.last_http_status) == (
        TeamStatus.VALID,
        "server_error",
        503,
    )
    assert fake.calls(team.key) == 1 + 3


def test_a_reset_connection_is_retried_then_an_error(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("reset"))
    request_id = request_for(deps, team)
    first = run_attempt(request_id, deps)
    assert isinstance(first, RetryLater) and first.error.code == "connection_error"
    final = run_to_end(deps, request_id)
    assert (final.result.outcome, final.result.error_code) == (Outcome.ERROR, "connection_error")
    _, row = load(deps, request_id)
    assert row is not None and row.status is TeamStatus.UNKNOWN


def test_a_hang_is_a_timeout_not_a_verdict(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("valid", latency_ms=3_000))  # past OGV_TOTAL_TIMEOUT=2
    step = run_attempt(request_for(deps, team), deps)
    assert isinstance(step, RetryLater)
    assert step.error.code == "timeout"


def test_a_finished_request_is_not_run_again(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("invalid_key"))
    request_id = request_for(deps, team)
    run_to_end(deps, request_id)
    before, _ = load(deps, request_id)

    assert isinstance(run_attempt(request_id, deps), AlreadyFinal)

    after, _ = load(deps, request_id)
    assert (after.attempts, after.finished_at, after.outcome) == (
        before.attempts,
        before.finished_at,
        before.outcome,
    )
    assert fake.calls(team.key) == 1


def test_an_older_result_never_overwrites_a_newer_one(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("invalid_key"))
    run_to_end(deps, request_for(deps, team))
    _, row = load(deps, team_request := request_for(deps, team))
    assert row is not None
    newer = row.last_checked_at
    assert newer is not None
    # A check that started before the one already written finishes now.
    from worker.checks.rules import Result, Target

    stale = Result(Outcome.VALID, "stale", 200)
    target = Target(
        team.team_id, team.label, "acct", team.integration_id, fake.url, "k", 1, OPSGENIE, "alerts",
        team.organization_id,
    )  # fmt: skip
    with deps.sessions.begin() as session:
        assert records.finish(session, team_request, stale, target, newer - timedelta(seconds=5))
    _, row = load(deps, team_request)
    assert row is not None and row.status is TeamStatus.INVALID_KEY


def test_a_replaced_key_ignores_the_old_keys_answer(deps: Collaborators, install: Install) -> None:
    team = install(KeyScenario("valid"))
    from worker.checks.rules import Result, Target

    target = Target(
        team.team_id, team.label, "acct", team.integration_id, "", "k", 1, OPSGENIE, "alerts",
        team.organization_id,
    )  # fmt: skip
    with deps.sessions.begin() as session:
        session.execute(update(Team).where(Team.id == team.team_id).values(key_version=2))
    request_id = request_for(deps, team)
    with deps.sessions.begin() as session:
        records.finish(session, request_id, Result(Outcome.INVALID_KEY, "old"), target,
                       utcnow())  # fmt: skip
    _, row = load(deps, request_id)
    assert row is not None and row.status is TeamStatus.UNKNOWN


def test_status_changes_are_recorded_once_each(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    team = install(KeyScenario("valid"))
    run_to_end(deps, request_for(deps, team))
    run_to_end(deps, request_for(deps, team))  # same answer: no transition
    fake.set_key(team.key, KeyScenario("invalid_key"))
    last = request_for(deps, team)
    run_to_end(deps, last)
    run_attempt(last, deps)  # a duplicate delivery

    with deps.sessions() as session:
        changes = session.scalars(
            select(TeamStatusChange)
            .where(TeamStatusChange.team_id == team.team_id)
            .order_by(TeamStatusChange.changed_at)
        ).all()
    assert [(c.old_status, c.new_status) for c in changes] == [
        (TeamStatus.UNKNOWN, TeamStatus.VALID),
        (TeamStatus.VALID, TeamStatus.INVALID_KEY),
    ]
    assert changes[1].request_id == last


def test_an_undecryptable_key_is_reported_not_crashed(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    from cryptography.fernet import Fernet

    team = install(KeyScenario("valid"))
    other = replace(deps, vault=KeyVault([Fernet.generate_key()]))
    step = run_to_end(other, request_for(deps, team))
    assert step.result.outcome is Outcome.ERROR
    assert step.result.error_code == "undecryptable_key"
    assert fake.calls(team.key) == 0


def test_a_base_url_removed_from_the_allowlist_is_never_called(
    deps: Collaborators, install: Install, fake: FakeOpsgenie, settings: Settings
) -> None:
    team = install(KeyScenario("valid"))
    runtime = Runtime.start(settings.model_copy(update={"allowed_base_urls": []}))
    try:
        strict = replace(deps, client=runtime.client, run=runtime.run)
        step = run_to_end(strict, request_for(deps, team))
    finally:
        runtime.close()
    assert (step.result.outcome, step.result.error_code) == (Outcome.ERROR, "base_url_not_allowed")
    assert fake.calls(team.key) == 0
    _, row = load(deps, request_for(deps, team))
    assert row is not None and row.status is TeamStatus.UNKNOWN
    assert row.last_error_code == "base_url_not_allowed"
