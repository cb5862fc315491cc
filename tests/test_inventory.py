"""Replacing and removing keys against checks already under way (worker/inventory.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import Outcome, RequestState, Team, TeamStatus, ValidationRequest, utcnow
from worker.checks import claims, records
from worker.checks.pipeline import Collaborators, Finished, run_attempt
from worker.checks.rules import CheckOptions, Result, Target, resolve
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.client import SavedTeam, ValidationClient


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[ValidationClient]:
    with ValidationClient(
        f"ogvsqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
        settings.effective_database_url,
        encryption_keys=settings.fernet_keys(),
        allowed_base_urls=settings.allowed_base_urls,
        check_options=CheckOptions.from_settings(settings),
    ) as made:
        yield made


def saved_team(client: ValidationClient, fake: FakeOpsgenie, behaviour: str) -> SavedTeam:
    org, key = uuid.uuid4().int % 10**12 + 1, str(uuid.uuid4())
    fake.set_key(key, KeyScenario(behaviour))  # type: ignore[arg-type]
    integration, _ = client.add_integration(org, "acme")
    saved, created = client.add_team(org, integration.integration_id, "ops", key)
    assert created
    return saved


def claim_and_resolve(deps: Collaborators, request_id: str) -> Target:
    """The first half of an attempt: the request claimed, the team's key read."""
    with deps.sessions.begin() as session:
        (claim,) = claims.claim_one(session, uuid.UUID(request_id), deps.lease)
        target = resolve(session, claim, deps.vault)
    assert isinstance(target, Target)
    return target


def load(client: ValidationClient, request_id: str, team_id: str) -> tuple[ValidationRequest, Team]:
    with client.sessions() as session:
        request = session.get(ValidationRequest, uuid.UUID(request_id))
        team = session.get(Team, team_id)
        assert request is not None and team is not None
        session.expunge_all()
        return request, team


def test_a_check_of_the_old_key_finishing_after_the_replacement_changes_nothing(
    client: ValidationClient, deps: Collaborators, fake: FakeOpsgenie
) -> None:
    saved = saved_team(client, fake, "invalid_key")
    old_check, team_id = saved.validation.id, saved.team.team_id
    old_target = claim_and_resolve(deps, old_check)  # the check of the old key is running
    new_key = str(uuid.uuid4())
    fake.set_key(new_key, KeyScenario("valid"))

    replaced = client.replace_key(team_id, new_key)
    # The old key's verdict comes in now, after the replacement.
    with deps.sessions.begin() as session:
        late = records.finish_many(
            session,
            [
                records.Completion(
                    uuid.UUID(old_check),
                    Result(Outcome.INVALID_KEY, "refused", http_status=401),
                    old_target,
                    utcnow(),
                )
            ],
        )

    request, team = load(client, old_check, team_id)
    assert late.finished == [] and late.changes == []
    assert (request.state, request.outcome, request.error_code) == (
        RequestState.FAILED,
        Outcome.ERROR,
        "key_replaced",
    )
    assert (team.key_version, team.status, team.last_http_status) == (2, TeamStatus.UNKNOWN, None)
    assert replaced.validation.state == "pending" and replaced.validation.id != old_check

    # The new key's own check decides.
    assert isinstance(run_attempt(uuid.UUID(replaced.validation.id), deps), Finished)
    _, team = load(client, replaced.validation.id, team_id)
    assert team.status is TeamStatus.VALID


def test_the_records_refuse_a_verdict_about_an_older_key_version(
    client: ValidationClient, deps: Collaborators, fake: FakeOpsgenie
) -> None:
    # Even on a request still open (here the new key's), a result about key_version 1
    # never reaches a team that holds key_version 2.
    saved = saved_team(client, fake, "valid")
    old_target = claim_and_resolve(deps, saved.validation.id)
    fake.set_key(new_key := str(uuid.uuid4()), KeyScenario("valid"))
    replaced = client.replace_key(saved.team.team_id, new_key)

    with deps.sessions.begin() as session:
        written = records.finish_many(
            session,
            [
                records.Completion(
                    uuid.UUID(replaced.validation.id),
                    Result(Outcome.INVALID_KEY, "refused", http_status=401),
                    old_target,
                    utcnow(),
                )
            ],
        )

    _, team = load(client, replaced.validation.id, saved.team.team_id)
    assert written.finished == [uuid.UUID(replaced.validation.id)] and written.changes == []
    assert (team.key_version, team.status, team.last_checked_at) == (2, TeamStatus.UNKNOWN, None)


def test_a_check_of_a_removed_team_ends_and_a_team_of_the_same_label_is_left_alone(
    client: ValidationClient, deps: Collaborators, fake: FakeOpsgenie
) -> None:
    saved = saved_team(client, fake, "invalid_key")
    old_target = claim_and_resolve(deps, saved.validation.id)
    removed = client.remove_team(saved.team.team_id)
    again, _ = client.add_team(
        removed.organization_id, removed.integration_id, "ops", old_target.key
    )

    with deps.sessions.begin() as session:
        late = records.finish_many(
            session,
            [
                records.Completion(
                    uuid.UUID(saved.validation.id),
                    Result(Outcome.INVALID_KEY, "refused", http_status=401),
                    old_target,
                    utcnow(),
                )
            ],
        )

    request, team = load(client, saved.validation.id, again.team.team_id)
    assert again.team.team_id == saved.team.team_id and late.finished == []
    assert (request.outcome, request.error_code) == (Outcome.INVALID_TEAM, "team_removed")
    assert team.status is TeamStatus.UNKNOWN
