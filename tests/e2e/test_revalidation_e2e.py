"""Re-validation through real processes: workers on Redis, the CLI, the webhook."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.support.stacks import Stack, install, ok_json, open_stack, validate, wait_until
from tests.support.webhooks import WebhookReceiver
from worker.client import verify_webhook
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.webhooks import new_secret


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hooked(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    receiver: WebhookReceiver,
) -> Iterator[Stack]:
    """Redis, PostgreSQL and a worker that reports status changes to the receiver."""
    stack = open_stack(
        "redis-postgres",
        request,
        tmp_path_factory,
        fake,
        OGV_STATUS_WEBHOOK_URL=receiver.url,
        OGV_WEBHOOK_SECRET=WEBHOOK_SECRET,
        OGV_ACCOUNT_RATE="4",
    )
    yield stack
    stack.stop()


WEBHOOK_SECRET = new_secret()


def test_a_status_change_makes_one_history_row_and_one_webhook_call(
    hooked: Stack, fake: FakeOpsgenie, receiver: WebhookReceiver
) -> None:
    account = install(hooked, fake, {"ops": KeyScenario("valid")})
    team, key = account["teams"]["ops"], account["keys"]["ops"]
    args = (account["org"], account["integration"], team)
    assert validate(hooked, *args)["outcome"] == "valid"
    assert validate(hooked, *args)["outcome"] == "valid"  # no change, no event
    fake.set_key(key, KeyScenario("invalid_key"))
    assert validate(hooked, *args)["outcome"] == "invalid_key"

    mine = lambda: [d for d in receiver.received if d["team_id"] == team]  # noqa: E731
    wait_until(lambda: len(mine()) >= 2)
    documents = sorted(mine(), key=lambda d: d["change_id"])
    assert [(d["old_status"], d["new_status"]) for d in documents] == [
        ("unknown", "valid"),
        ("valid", "invalid_key"),
    ]
    assert documents[1]["account"] == f"acct-{account['org']}"
    assert set(documents[1]) == {
        "event",
        "change_id",
        "request_id",
        "team_id",
        "team_label",
        "organization_id",
        "integration_id",
        "account",
        "old_status",
        "new_status",
        "changed_at",
        "hint",
    }
    # The key turned invalid: the document says what to do about it (never the key).
    assert documents[1]["hint"]["code"] == "key_disabled_or_deleted"
    assert not any(key.encode() in raw for raw in receiver.raw)
    for document in documents:  # signed as Standard Webhooks says, under the change's id
        n = receiver.received.index(document)
        headers, raw = receiver.headers[n], receiver.raw[n]
        assert headers["webhook-id"] == f"ogv-change-{document['change_id']}"
        assert verify_webhook(WEBHOOK_SECRET, headers, raw) == document
    engine = create_engine(hooked.env["OGV_DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT old_status, new_status, notified_at IS NOT NULL FROM team_status_changes "
                "WHERE team_id = :team ORDER BY id"
            ),
            {"team": team},
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("unknown", "valid", True), ("valid", "invalid_key", True)]
    import time

    time.sleep(0.5)
    assert len(mine()) == 2  # and no more calls came after


def test_revalidate_cli_reports_every_outcome(hooked: Stack, fake: FakeOpsgenie) -> None:
    account = install(
        hooked,
        fake,
        {
            "good": KeyScenario("valid"),
            "dead": KeyScenario("invalid_key"),
            "closed": KeyScenario("no_access"),
        },
    )
    summary = ok_json(hooked, "revalidate", "--org", str(account["org"]))
    assert summary["outcomes"] == {"valid": 1, "invalid_key": 1, "key_lacks_access": 1}
    assert summary["finished"] == summary["requests"] == 3
    uuid.UUID(summary["run_id"])
    refused = hooked.ogv("revalidate", "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "invalid"


def test_team_import_from_stdin_through_the_cli(hooked: Stack, fake: FakeOpsgenie) -> None:
    account = install(hooked, fake, {})
    secret = f"imported-{uuid.uuid4()}"
    lines = "\n".join(
        [
            json.dumps(
                {
                    "organization_id": account["org"],
                    "integration_id": account["integration"],
                    "label": "one",
                    "integration_key": secret,
                }
            ),
            json.dumps(
                {
                    "organization_id": account["org"],
                    "integration_id": account["integration"],
                    "label": "one",
                    "integration_key": secret,
                }
            ),
        ]
    )
    done = hooked.ogv("team", "import", "-", "--json", stdin=lines)
    assert done.returncode == 1  # one line was refused, so nothing was written
    report = json.loads(done.stdout)
    assert (report["imported"], report["written"]) == (0, False)
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(2, "duplicate_team")]

    done = hooked.ogv("team", "import", "-", "--skip-invalid", "--json", stdin=lines)
    assert done.returncode == 1  # still a refused line to report
    report = json.loads(done.stdout)
    assert (report["imported"], report["written"]) == (1, True)
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(2, "duplicate_team")]
    assert secret not in done.stdout + done.stderr
