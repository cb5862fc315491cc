"""A whole host retires in the middle of a re-validation run (issue 12, SPEC §6).

A fleet of valid teams over several accounts is re-validated through the real CLI
and a real prefork worker on Redis and PostgreSQL; part-way through, the fake's US
host starts answering 410 to everything. Not one team may change status, and the
host's unavailability must be said exactly once (log event, webhook document),
and its recovery once as well, after the host is back.

The figures of each run are written to `OGV_TEST_ARTIFACTS/platform_outage.json`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from subprocess import CompletedProcess
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.orm import Session

from models import PlatformHealth, Team, TeamStatusChange, ValidationRequest
from models.crypto import KeyVault
from tests.support.services import ARTIFACTS
from tests.support.stacks import Stack, events, open_stack, wait_until
from tests.support.webhooks import WebhookReceiver
from worker import inventory
from worker.checks.platform_health import idempotency_key
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

ACCOUNTS = 6
TEAMS_PER_ACCOUNT = 30
WINDOW = 3.0
"""OGV_PLATFORM_WINDOW for this stack: short, so the test need not wait minutes."""
RETIRE_AFTER_CALLS = 60
"""Calls to the US host in the second run before it turns `retired`: a third of the fleet."""


class HeaderRecordingReceiver(WebhookReceiver):
    """The webhook receiver, also keeping each POST's Idempotency-Key by its event."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[tuple[str, str | None]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        self.keys.append(
            (self.received[-1].get("event", ""), request.headers.get("Idempotency-Key"))
        )
        return response


@pytest.fixture(scope="module")
def receiver() -> Iterator[HeaderRecordingReceiver]:
    server = HeaderRecordingReceiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def watched_fleet(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    receiver: WebhookReceiver,
) -> Iterator[Stack]:
    """Redis, PostgreSQL, a prefork worker, the webhook, and a short platform window."""
    stack = open_stack(
        "redis-postgres",
        request,
        tmp_path_factory,
        fake,
        OGV_STATUS_WEBHOOK_URL=receiver.url,
        OGV_PLATFORM_WINDOW=str(WINDOW),
        OGV_PLATFORM_MIN_ANSWERS="20",
        OGV_ACCOUNT_RATE="20",
        OGV_MAX_ATTEMPTS="2",  # a 410 is retried once, then ends `error`
        # Batches of 30: several batches, on both worker processes, record at once.
        OGV_BATCH_SIZE="30",
        OGV_BATCH_CONCURRENCY="30",
    )
    yield stack
    stack.stop()


def install_fleet(stack: Stack, fake: FakeOpsgenie) -> tuple[int, list[str]]:
    """One organization with ACCOUNTS accounts on the US host, every key valid."""
    org = uuid.uuid4().int % 10**9 + 1
    vault = KeyVault([stack.env["OGV_ENCRYPTION_KEYS"].encode()])
    engine = create_engine(stack.env["OGV_DATABASE_URL"])
    teams = []
    with Session(engine) as session, session.begin():
        for account in range(ACCOUNTS):
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"fleet-{org}-{account}",
                base_url=fake.url,
                allowed_base_urls=[fake.url],
            )
            for number in range(TEAMS_PER_ACCOUNT):
                key = f"key-{uuid.uuid4()}"
                fake.set_key(key, KeyScenario("valid", account=f"fleet-{org}-{account}"))
                team = inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=f"team-{number:02d}",
                    integration_key=key,
                    vault=vault,
                )
                teams.append(team.id)
        # Earlier tests of this session checked keys at the same fake URL: start clean.
        session.execute(delete(PlatformHealth).where(PlatformHealth.base_url == fake.url))
    engine.dispose()
    return org, teams


def revalidate(stack: Stack, org: int) -> dict[str, Any]:
    done = stack.ogv("revalidate", "--org", str(org), "--json", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def revalidate_retiring_midway(stack: Stack, fake: FakeOpsgenie, org: int) -> dict[str, Any]:
    """Re-validate the fleet; the US host retires after RETIRE_AFTER_CALLS calls."""
    finished: list[CompletedProcess[str]] = []
    run = threading.Thread(
        target=lambda: finished.append(
            stack.ogv("revalidate", "--org", str(org), "--json", timeout=90)
        )
    )
    before = fake.host_calls("opsgenie")
    run.start()
    wait_until(lambda: fake.host_calls("opsgenie") - before >= RETIRE_AFTER_CALLS, timeout=60)
    fake.set_host("opsgenie", "retired")
    run.join(90)
    [done] = finished
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


class Fleet:
    """What the database says about the fleet's teams and one run's requests."""

    def __init__(self, stack: Stack, teams: list[str]) -> None:
        self.engine = create_engine(stack.env["OGV_DATABASE_URL"])
        self.teams = teams

    def statuses(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(Team.status, func.count())
                .where(Team.id.in_(self.teams))
                .group_by(Team.status)
            ).all()
        return {status.value: count for status, count in rows}

    def status_changes(self) -> int:
        with Session(self.engine) as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(TeamStatusChange)
                    .where(TeamStatusChange.team_id.in_(self.teams))
                )
                or 0
            )

    def endings(self, run_id: str) -> dict[tuple[str, str | None, int | None], int]:
        """The run's requests by (outcome, error code, HTTP status)."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(
                    ValidationRequest.outcome,
                    ValidationRequest.error_code,
                    ValidationRequest.http_status,
                    func.count(),
                )
                .where(ValidationRequest.run_id == uuid.UUID(run_id))
                .group_by(
                    ValidationRequest.outcome,
                    ValidationRequest.error_code,
                    ValidationRequest.http_status,
                )
            ).all()
        return {(o.value if o else "none", code, status): n for o, code, status, n in rows}


def platform_documents(receiver: WebhookReceiver, event: str) -> list[dict[str, Any]]:
    return [d for d in receiver.received if d.get("event") == event]


def platform_events(stack: Stack, event: str, base_url: str) -> list[dict[str, Any]]:
    log = stack.worker_log.read_text(errors="replace")
    return [e for e in events(log, event) if e.get("base_url") == base_url]


def test_a_host_retiring_mid_run_changes_no_status_and_is_announced_once(
    watched_fleet: Stack,
    fake: FakeOpsgenie,
    receiver: HeaderRecordingReceiver,
    record_property: Any,
) -> None:
    stack, started = watched_fleet, time.monotonic()
    org, teams = install_fleet(stack, fake)
    fleet = Fleet(stack, teams)
    figures: dict[str, Any] = {"teams": len(teams), "accounts": ACCOUNTS}

    # 1. Everyone valid first.
    first = revalidate(stack, org)
    assert first["outcomes"] == {"valid": len(teams)}
    assert fleet.statuses() == {"valid": len(teams)}
    changes_before = fleet.status_changes()
    assert changes_before == len(teams)  # unknown -> valid, once each

    # 2. The US host retires a third of the way into the next run.
    try:
        second = revalidate_retiring_midway(stack, fake, org)
        endings = fleet.endings(str(second["run_id"]))
        wait_until(lambda: platform_documents(receiver, "platform.unavailable"), timeout=20)
        wait_until(lambda: platform_events(stack, "platform.unavailable", fake.url), timeout=10)
        health = stack.ogv("health", "--json", "--timeout", "20")
        listed = stack.ogv("platforms", "--json")
        status_text = stack.ogv("status", "--org", str(org))
    finally:
        fake.set_host("opsgenie", None)
    time.sleep(1.0)  # a late duplicate would have arrived by now
    unavailable_docs = platform_documents(receiver, "platform.unavailable")
    unavailable_logged = platform_events(stack, "platform.unavailable", fake.url)
    figures["retired_run"] = {
        "requests": second["requests"],
        "endings": {f"{o}/{c}/{s}": n for (o, c, s), n in endings.items()},
        "status_changes": fleet.status_changes() - changes_before,
        "platform.unavailable events": len(unavailable_logged),
        "platform.unavailable documents": len(unavailable_docs),
        "window": {k: unavailable_docs[0][k] for k in ("answers", "unrecognised")},
    }

    assert second["requests"] == len(teams)
    assert set(endings) <= {("valid", None, 200), ("error", "unrecognised_answer", 410)}
    assert sum(endings.values()) == len(teams)
    assert endings.get(("error", "unrecognised_answer", 410), 0) >= len(teams) // 2
    assert fleet.status_changes() == changes_before  # ZERO status changes
    assert fleet.statuses() == {"valid": len(teams)}

    [logged] = unavailable_logged
    assert logged["level"] == "WARNING" and logged["platform"] == "opsgenie"
    assert logged["unrecognised"] * 2 > logged["answers"] >= 20
    [document] = unavailable_docs
    assert [k for event, k in receiver.keys if event == "platform.unavailable"] == [
        idempotency_key(document)
    ]
    since = datetime.fromisoformat(document.pop("since"))
    assert document == {
        "event": "platform.unavailable",
        "base_url": fake.url,
        "platform": "opsgenie",
        "answers": logged["answers"],
        "unrecognised": logged["unrecognised"],
    }
    assert not any(b"key-" in raw for raw in receiver.raw)

    assert health.returncode == 0, health.stdout  # an upstream outage: still healthy
    # The test database is shared by the session: other tests' base URLs may be listed too.
    platforms = json.loads(health.stdout)["platforms"]
    assert [p for p in platforms["unavailable"] if p["base_url"] == fake.url] == [
        {"base_url": fake.url, "platform": "opsgenie", "since": since.isoformat()}
    ]
    [row] = [r for r in json.loads(listed.stdout) if r["base_url"] == fake.url]
    assert row["unavailable"] is True
    shown = " ".join(status_text.stdout.split())
    assert "platforms: unavailable: " in shown and f"{fake.url} (opsgenie) since" in shown

    # 3. The host is back: once the outage's window has passed, the next run recovers it.
    time.sleep(max(0.0, since.timestamp() + WINDOW - time.time()))
    third = revalidate(stack, org)
    wait_until(lambda: platform_documents(receiver, "platform.recovered"), timeout=20)
    wait_until(lambda: platform_events(stack, "platform.recovered", fake.url), timeout=10)
    time.sleep(1.0)
    recovered_docs = platform_documents(receiver, "platform.recovered")
    recovered_logged = platform_events(stack, "platform.recovered", fake.url)
    figures["recovery_run"] = {
        "requests": third["requests"],
        "outcomes": third["outcomes"],
        "status_changes": fleet.status_changes() - changes_before,
        "platform.recovered events": len(recovered_logged),
        "platform.recovered documents": len(recovered_docs),
        "platform.unavailable events": len(
            platform_events(stack, "platform.unavailable", fake.url)
        ),
    }
    figures["seconds"] = round(time.monotonic() - started, 1)
    (ARTIFACTS / "platform_outage.json").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "platform_outage.json").write_text(json.dumps(figures, indent=2) + "\n")
    record_property("figures", json.dumps(figures))

    assert third["outcomes"] == {"valid": len(teams)}
    assert fleet.status_changes() == changes_before
    assert len(recovered_logged) == 1 and recovered_logged[0]["level"] == "INFO"
    [back] = recovered_docs
    assert set(back) == {"event", "base_url", "platform", "at", "answers", "unrecognised"}
    assert (back["base_url"], back["platform"]) == (fake.url, "opsgenie")
    assert back["unrecognised"] * 2 <= back["answers"]
    assert len(platform_documents(receiver, "platform.unavailable")) == 1
    assert len(platform_events(stack, "platform.unavailable", fake.url)) == 1
