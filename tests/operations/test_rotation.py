"""Encryption key rotation: every key moves to the new key, the old key can go."""

from __future__ import annotations

import json
import uuid

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from typer.testing import CliRunner

from models import Requester, Team
from models.crypto import KeyVault, UndecryptableKey
from models.db import session_factory
from worker import inventory
from worker.checks import requests
from worker.checks.pipeline import Collaborators, Finished, run_attempt
from worker.checks.retries import RetryPolicy
from worker.checks.runtime import Runtime
from worker.operations.cli import app
from worker.operations.rotation import rotate
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario


def _org_with_teams(
    settings: Settings, fake: FakeOpsgenie, vault: KeyVault, n: int
) -> tuple[int, int, list[str]]:
    org = uuid.uuid4().int % 10**9 + 1
    with session_factory(settings.effective_database_url).begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"rot-{org}",
            base_url=fake.url,
            allowed_base_urls=settings.allowed_base_urls,
        )
        ids = []
        for i in range(n):
            key = f"rot-{uuid.uuid4()}"
            fake.set_key(key, KeyScenario("valid"))
            ids.append(
                inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=f"t{i}",
                    integration_key=key,
                    vault=vault,
                ).id
            )
        return org, integration.id, ids


def test_rotation_moves_every_key_and_reports_the_undecryptable(
    settings: Settings, fake: FakeOpsgenie
) -> None:
    old, new, lost = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
    org, integration_id, team_ids = _org_with_teams(settings, fake, KeyVault([old]), 7)
    _, _, [orphan] = _org_with_teams(settings, fake, KeyVault([lost]), 1)
    sessions = session_factory(settings.effective_database_url)
    done: list[int] = []

    # Every team of the session's database is rotated: batches of 100 keep it quick.
    report = rotate(sessions, KeyVault([new, old]), batch_size=100, progress=done.append)

    assert orphan in report.undecryptable
    assert report.rotated >= 7 and done == sorted(done)
    with sessions() as session:
        tokens = {
            t.id: t.encrypted_key
            for t in session.scalars(select(Team).where(Team.id.in_(team_ids)))
        }
    only_new = KeyVault([new])
    assert all(only_new.decrypt(token).startswith("rot-") for token in tokens.values())
    with pytest.raises(UndecryptableKey):
        KeyVault([old]).decrypt(tokens[team_ids[0]])

    runtime = Runtime.start(settings)
    deps = Collaborators(
        sessions=sessions,
        client=runtime.client,
        gate=runtime.gate,
        vault=only_new,
        policy=RetryPolicy.from_settings(settings),
        run=runtime.run,
    )
    try:
        for team_id in team_ids:
            with sessions.begin() as session:
                request, _ = requests.create_request(
                    session,
                    organization_id=org,
                    integration_id=integration_id,
                    team_id=team_id,
                    requested_by=Requester.CLI,
                )
                request_id = request.id
            step = run_attempt(request_id, deps)
            assert isinstance(step, Finished) and step.result.outcome.value == "valid"
    finally:
        runtime.close()


def test_rotation_resumes_after_a_team_id(settings: Settings, fake: FakeOpsgenie) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    _, _, team_ids = _org_with_teams(settings, fake, KeyVault([old]), 4)
    sessions = session_factory(settings.effective_database_url)
    report = rotate(sessions, KeyVault([new, old]), after=team_ids[1])
    with sessions() as session:
        tokens = {
            t.id: t.encrypted_key
            for t in session.scalars(select(Team).where(Team.id.in_(team_ids)))
        }
    assert KeyVault([old]).decrypt(tokens[team_ids[0]])  # before the resume point: untouched
    assert KeyVault([new]).decrypt(tokens[team_ids[3]])
    assert report.last_team_id is not None and report.last_team_id >= team_ids[3]


def test_keys_rotate_command(
    ogv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fake: FakeOpsgenie
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", fake.url)
    get_settings.cache_clear()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    added = json.loads(
        runner.invoke(
            app,
            [
                "integration",
                "add",
                "--org",
                "3",
                "--account",
                "a",
                "--platform",
                "opsgenie",
                "--base-url",
                fake.url,
                "--json",
            ],
        ).stdout
    )
    secret = f"cli-rot-{uuid.uuid4()}"
    runner.invoke(
        app,
        [
            "team",
            "add",
            "--org",
            "3",
            "--integration",
            str(added["integration_id"]),
            "--label",
            "x",
        ],
        input=secret + "\n",
    )
    first = get_settings().fernet_keys()[0].decode()
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("OGV_DATABASE_URL", get_settings().effective_database_url)
    monkeypatch.setenv("OGV_BROKER_URL", "embedded")
    monkeypatch.setenv("OGV_ENCRYPTION_KEYS", f"{new},{first}")
    get_settings.cache_clear()

    # The embedded broker carries no broadcasts: the workers cannot be asked.
    refused = runner.invoke(app, ["keys", "rotate", "--json"])
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["error"]["code"] == "keys_not_deployed"

    result = runner.invoke(app, ["keys", "rotate", "--force", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "rotated": 1,
        "undecryptable": [],
        "last_team_id": f"{1}-x",
    }
    assert secret not in result.output
