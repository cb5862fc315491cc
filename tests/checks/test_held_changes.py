"""The changes the mass-change guard holds: `ogv changes list | release | discard`, the
re-checks beat asks for, and the guard's lines in `ogv status`.

Held changes are made by the real write path (`records.finish_many` with a guard whose
windows live in the database and trip after three changes over three accounts), on
SQLite and PostgreSQL; a few formatting tests insert rows through the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from models import (
    GuardWindow,
    HeldChange,
    Outcome,
    Requester,
    RequestState,
    Team,
    TeamStatus,
    TeamStatusChange,
    ValidationRequest,
    utcnow,
)
from models.crypto import KeyVault
from models.db import session_factory
from tests.support.services import NAMESPACE
from tests.support.stacks import ogv_command
from worker import audit, inventory
from worker.checks import events, held, records, requests
from worker.checks.guard import DatabaseWindows, Guard, Thresholds
from worker.checks.requests import Ask
from worker.checks.rules import Result, Target
from worker.enqueue import BATCH_TASK, VALIDATE_TASK
from worker.operations.cli import app
from worker.periodic import recheck
from worker.platforms import get_platform
from worker.settings import Settings, get_settings

runner = CliRunner()
TRIPS_AFTER_THREE = Guard(
    0.0, Thresholds(window=600, threshold=0.1, min_changes=3), DatabaseWindows()
)
"""No confirmation, and a guard that trips on the third change over three organizations
(each counts for one change: ⌈3 / 3⌉)."""


@dataclass(frozen=True)
class Member:
    team_id: str
    label: str
    organization_id: int
    integration_id: int
    account: str

    @property
    def ask(self) -> Ask:
        return Ask(self.organization_id, self.integration_id, self.team_id)


@dataclass
class Fleet:
    """Valid teams of three accounts at a base URL of their own."""

    settings: Settings
    base_url: str
    members: list[Member] = field(default_factory=list)

    @property
    def sessions(self) -> Any:
        return session_factory(self.settings.effective_database_url)


def fleet(settings: Settings, per_account: int = 2, accounts: int = 3) -> Fleet:
    base_url = f"http://held-{uuid.uuid4().hex[:10]}.test/"
    made = Fleet(settings, base_url)
    vault = KeyVault(settings.fernet_keys())
    with made.sessions.begin() as session:
        for _ in range(accounts):
            org = uuid.uuid4().int % 10**12 + 1
            integration, _link = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"acct-{org}",
                base_url=base_url,
                allowed_base_urls=[base_url],
            )
            for n in range(per_account):
                team = inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=f"team-{n}",
                    integration_key=f"key-{uuid.uuid4()}",
                    vault=vault,
                )
                made.members.append(Member(team.id, team.label, org, integration.id, f"acct-{org}"))
        session.execute(
            update(Team)
            .where(Team.id.in_([m.team_id for m in made.members]))
            .values(status=TeamStatus.VALID)
        )
    # One of each account, then the second of each: the third change trips the guard.
    made.members.sort(key=lambda m: (m.label, m.integration_id))
    return made


def target(made: Fleet, member: Member) -> Target:
    return Target(
        member.team_id, member.label, member.account, member.integration_id, made.base_url,
        "unused", 1, get_platform("opsgenie"), "authenticate", member.organization_id,
        TeamStatus.VALID,
    )  # fmt: skip


def answer(
    made: Fleet, members: list[Member], outcome: Outcome, guard: Guard = TRIPS_AFTER_THREE
) -> records.Written:
    """Record a check of each member and write `outcome` for all of them in one batch."""
    with made.sessions.begin() as session:
        asked = requests.create_requests(
            session, [m.ask for m in members], requested_by=Requester.BEAT
        )
        ids = {ask.team_id: request.id for ask, (request, _) in asked.items()}
    status = 200 if outcome is Outcome.VALID else 401
    started = utcnow()
    completions = [
        records.Completion(
            ids[m.team_id],
            Result(outcome, "Key is not valid" if status == 401 else "ok", status),
            target(made, m),
            # In order, and all in the past: a re-check due "now" must find every one.
            started - timedelta(milliseconds=len(members) - n),
        )
        for n, m in enumerate(members)
    ]
    with made.sessions.begin() as session:
        return records.finish_many(session, completions, guard)


@pytest.fixture
def tripped(settings: Settings) -> Iterator[Fleet]:
    """Six valid teams turned invalid_key at once: two written, then four held."""
    made = fleet(settings)
    written = answer(made, made.members, Outcome.INVALID_KEY)
    assert (len(written.changes), len(written.held), len(written.trips)) == (2, 4, 1)
    yield made
    forget(made)


def forget(made: Fleet) -> None:
    """Drop the base URL's window and held changes: other tests read every base URL's."""
    with made.sessions.begin() as session:
        session.execute(delete(GuardWindow).where(GuardWindow.base_url == made.base_url))
        session.execute(delete(HeldChange).where(HeldChange.base_url == made.base_url))


def held_rows(made: Fleet) -> dict[str, HeldChange]:
    with made.sessions() as session:
        rows = session.scalars(select(HeldChange).where(HeldChange.base_url == made.base_url))
        return {row.team_id: row for row in rows}


def team(made: Fleet, team_id: str) -> Team:
    with made.sessions() as session:
        found = session.get(Team, team_id)
        assert found is not None
        return found


# -- reading -----------------------------------------------------------------------------


def test_the_guard_report_and_the_held_changes(tripped: Fleet) -> None:
    held_ids = [m.team_id for m in tripped.members[2:]]
    with tripped.sessions() as session:
        report = held.guard_report(session, DatabaseWindows(), TRIPS_AFTER_THREE.thresholds)
        rows = held.list_held(session, held.Selection(tripped.base_url))

    mine = [g for g in report if g.base_url == tripped.base_url]
    assert len(mine) == 1 and mine[0].tripped_at is not None
    assert mine[0] == held.BaseUrlGuard(tripped.base_url, True, mine[0].tripped_at, 3, 3, 3, 1, 4)
    assert report.index(mine[0]) < len([g for g in report if g.tripped])  # tripped first
    assert [r.team_id for r in rows] == sorted(held_ids)
    first = next(r for r in rows if r.team_id == held_ids[0])
    member = tripped.members[2]
    assert (first.label, first.organization_id, first.integration_id, first.account) == (
        member.label, member.organization_id, member.integration_id, member.account,
    )  # fmt: skip
    assert (first.old_status, first.new_status, first.http_status, first.message) == (
        "valid", "invalid_key", 401, "Key is not valid",
    )  # fmt: skip
    assert first.rechecked_at is None
    for member in tripped.members[2:]:
        assert team(tripped, member.team_id).status is TeamStatus.VALID


# -- release -----------------------------------------------------------------------------


def test_release_writes_status_and_history_and_drops_the_stale(tripped: Fleet) -> None:
    kept, replaced, moved, fresh = tripped.members[2:]
    rows = held_rows(tripped)
    with tripped.sessions.begin() as session:  # a new key, and a status changed since
        session.execute(update(Team).where(Team.id == replaced.team_id).values(key_version=2))
        session.execute(
            update(Team).where(Team.id == moved.team_id).values(status=TeamStatus.REJECTED)
        )

    with tripped.sessions.begin() as session:
        released = held.release(session, held.Selection(tripped.base_url))

    assert released.dropped == 2
    assert sorted(c.team_id for c in released.changes) == sorted([kept.team_id, fresh.team_id])
    assert held_rows(tripped) == {}
    with tripped.sessions() as session:
        history = {
            c.team_id: c
            for c in session.scalars(
                select(TeamStatusChange).where(
                    TeamStatusChange.id.in_([c.id for c in released.changes])
                )
            )
        }
        documents = [events.document(session, c.id) for c in released.changes]
    for member in (kept, fresh):
        written = team(tripped, member.team_id)
        change = history[member.team_id]
        assert (written.status, written.last_http_status) == (TeamStatus.INVALID_KEY, 401)
        assert written.status_changed_at == change.changed_at
        assert (change.request_id, change.old_status, change.new_status) == (
            rows[member.team_id].request_id, TeamStatus.VALID, TeamStatus.INVALID_KEY,
        )  # fmt: skip
        assert change.notified_at is None  # the outbox sends it if the message is lost
    assert all(d is not None and d["new_status"] == "invalid_key" for d in documents)
    assert team(tripped, replaced.team_id).status is TeamStatus.VALID
    assert team(tripped, moved.team_id).status is TeamStatus.REJECTED


# -- discard and re-checks ---------------------------------------------------------------


@dataclass
class Publisher:
    """Stands for the producers' Celery app: records what it was asked to send."""

    sent: list[tuple[str, list[Any]]] = field(default_factory=list)

    def send_task(self, name: str, args: list[Any] | None = None, **_: Any) -> None:
        self.sent.append((name, list(args or [])))


def open_requests(made: Fleet, team_ids: list[str]) -> dict[str, ValidationRequest]:
    with made.sessions() as session:
        rows = session.scalars(
            select(ValidationRequest).where(
                ValidationRequest.team_id.in_(team_ids),
                ValidationRequest.state == RequestState.PENDING,
            )
        )
        return {row.team_id: row for row in rows}


def test_discard_drops_the_held_changes_and_checks_the_teams_again(tripped: Fleet) -> None:
    held_ids = sorted(m.team_id for m in tripped.members[2:])
    publisher = Publisher()

    with tripped.sessions.begin() as session:
        asks = held.discard(session, held.Selection(tripped.base_url, tuple(held_ids[:3])))
    asked = recheck.check_again(
        tripped.sessions, publisher, asks, requested_by=Requester.CLI, batch_size=2
    )

    assert asked == 3 and sorted(a.team_id for a in asks) == held_ids[:3]
    assert sorted(held_rows(tripped)) == held_ids[3:]
    pending = open_requests(tripped, held_ids)
    assert sorted(pending) == held_ids[:3]
    assert {r.requested_by for r in pending.values()} == {Requester.CLI}
    # Batches of at most two: one batch task, and the team left alone as one request.
    batches = {r.batch_id for r in pending.values()}
    assert sorted(name for name, _ in publisher.sent) == [BATCH_TASK, VALIDATE_TASK]
    assert {args[0] for name, args in publisher.sent if name == BATCH_TASK} <= {
        str(b) for b in batches
    }


def test_beat_checks_held_teams_again_and_a_valid_answer_drops_the_change(
    tripped: Fleet,
) -> None:
    held_ids = sorted(m.team_id for m in tripped.members[2:])
    publisher = Publisher()

    first = recheck.recheck_held(tripped.sessions, publisher, every=0.0, batch_size=250)
    again = recheck.recheck_held(tripped.sessions, publisher, every=3600.0, batch_size=250)

    assert first >= 4 and again == 0  # the database may hold other tests' held changes
    assert all(row.rechecked_at is not None for row in held_rows(tripped).values())
    pending = open_requests(tripped, held_ids)
    assert sorted(pending) == held_ids
    assert {r.requested_by for r in pending.values()} == {Requester.BEAT}
    batches = {str(r.batch_id) for r in pending.values()}
    assert len(batches) == 1 and (BATCH_TASK, [*batches]) in publisher.sent
    # The re-check of one team finds its key valid: its held change goes by itself.
    back = next(m for m in tripped.members if m.team_id == held_ids[0])
    valid = Result(Outcome.VALID, "ok", 200)
    with tripped.sessions.begin() as session:
        records.finish_many(
            session,
            [records.Completion(pending[back.team_id].id, valid, target(tripped, back), utcnow())],
            TRIPS_AFTER_THREE,
        )
    assert sorted(held_rows(tripped)) == held_ids[1:]


# -- the command line --------------------------------------------------------------------


@pytest.fixture
def cli(ogv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The CLI in-process on the test's database; no webhook, so nothing is published."""
    monkeypatch.setenv("OGV_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("OGV_BROKER_URL", "embedded")
    monkeypatch.setenv("OGV_ENCRYPTION_KEYS", settings.encryption_keys[0].get_secret_value())
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()


def ogv(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, list(args))
    out = result.stdout
    parsed = json.loads(out) if "--json" in args and out.strip() else None
    return result.exit_code, parsed, out + result.stderr


def test_changes_list_shows_the_guard_and_filters_by_base_url(tripped: Fleet, cli: None) -> None:
    other = fleet(tripped.settings, per_account=1, accounts=1)
    with other.sessions.begin() as session:  # held elsewhere, written through the model
        session.add(
            HeldChange(
                team_id=other.members[0].team_id, request_id=uuid.uuid4(),
                base_url=other.base_url, account=other.members[0].account, key_version=1,
                old_status=TeamStatus.VALID, new_status=TeamStatus.KEY_LACKS_ACCESS,
                http_status=403, error_code=None, message="Forbidden",
            )
        )  # fmt: skip

    code, listed, _ = ogv("changes", "list", "--base-url", tripped.base_url.upper(), "--json")
    everything = ogv("changes", "list", "--json")[1]
    text_code, _, text = ogv("changes", "list", "--base-url", tripped.base_url)

    assert code == 0 and text_code == 0
    assert [g["base_url"] for g in listed["guard"]] == [tripped.base_url]
    # Read with the configured thresholds, each organization counts up to 7 changes.
    assert {
        k: listed["guard"][0][k] for k in ("tripped", "held", "checks", "changes", "organizations")
    } == {"tripped": True, "held": 4, "checks": 6, "changes": 6, "organizations": 3}
    assert sorted(r["team_id"] for r in listed["held"]) == sorted(
        m.team_id for m in tripped.members[2:]
    )
    assert set(listed["held"][0]) == {
        "team_id", "label", "organization_id", "integration_id", "account", "base_url",
        "old_status", "new_status", "http_status", "error_code", "message", "held_at",
        "rechecked_at",
    }  # fmt: skip
    forget(other)
    other_row = next(r for r in everything["held"] if r["team_id"] == other.members[0].team_id)
    assert (other_row["new_status"], other_row["http_status"]) == ("key_lacks_access", 403)
    assert other.base_url in [g["base_url"] for g in everything["guard"]]
    assert f"guard {tripped.base_url}: tripped since" in text
    assert "valid → invalid_key" in text and "HTTP 401, Key is not valid" in text
    assert other.members[0].team_id not in text


def test_changes_release_through_the_cli(tripped: Fleet, cli: None) -> None:
    code, out, _ = ogv("changes", "release", "--base-url", tripped.base_url, "--json")
    again = ogv("changes", "release", "--base-url", tripped.base_url)

    assert code == 0 and (out["released"], out["dropped"]) == (4, 0)
    assert {c["new_status"] for c in out["changes"]} == {"invalid_key"}
    assert again[0] == 0 and again[2].strip() == "released 0, dropped 0 stale"
    for member in tripped.members:
        assert team(tripped, member.team_id).status is TeamStatus.INVALID_KEY


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], "invalid", "name the held changes"),
        (["--all", "--team", "1-a"], "invalid", "give --all alone"),
        (["--team", "6a1f0c2e-9d3b-4f5e-8a7c-1b2d3e4f5a6b"], "invalid", "--team takes team ids"),
        (["--base-url", "ftp://6a1f0c2e-secret.test/"], "invalid_base_url", "--base-url"),
    ],
)
@pytest.mark.parametrize("command", ["release", "discard"])
def test_changes_refuse_in_one_line_without_echoing(
    ogv_env: dict[str, str], command: str, args: list[str], code: str, message: str
) -> None:
    exit_code, out, text = ogv("changes", command, *args, "--json")
    plain = ogv("changes", command, *args)[2]

    assert exit_code == 1 and out["error"]["code"] == code
    assert message in out["error"]["message"]
    assert len(plain.strip().splitlines()) == 1 and "Traceback" not in plain
    assert "6a1f0c2e" not in text + plain


def test_status_says_which_guard_is_tripped(tripped: Fleet, cli: None) -> None:
    code, _, text = ogv("status", "--org", str(tripped.members[0].organization_id))

    assert code == 0
    line = next(line for line in text.splitlines() if line.startswith("guard:"))
    # Other tests may have tripped other base URLs' guards in this session's database.
    assert line.startswith("guard: tripped for ") and line.endswith(" — `ogv changes list`")
    mine = line[line.index(f"tripped for {tripped.base_url} since ") :]
    assert mine.split(" — ")[0].split("; ")[1] == "4 changes held"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_real_commands_discard_and_release_with_a_webhook(
    tripped: Fleet, tmp_path: Any
) -> None:
    """`ogv` as operators run it: discard publishes the checks, release the webhooks."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env.update(
        OGV_DATA_DIR=str(tmp_path / "data"),
        OGV_DATABASE_URL=tripped.settings.effective_database_url,
        OGV_BROKER_URL="embedded",
        OGV_ENCRYPTION_KEYS=tripped.settings.encryption_keys[0].get_secret_value(),
        OGV_STATUS_WEBHOOK_URL="http://127.0.0.1:9/unused",
    )
    (tmp_path / "data").mkdir()  # where the embedded broker keeps its file
    held_ids = sorted(m.team_id for m in tripped.members[2:])

    def run(*args: str) -> Any:
        done = subprocess.run(
            [*ogv_command(), "changes", *args, "--json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    discarded = run("discard", "--team", held_ids[0], "--team", held_ids[1])
    released = run("release", "--base-url", tripped.base_url)

    assert discarded == {"discarded": 2, "rechecked": 2}
    assert sorted(open_requests(tripped, held_ids)) == held_ids[:2]
    assert (released["released"], released["dropped"]) == (2, 0)
    assert held_rows(tripped) == {}
    with tripped.sessions() as session:  # who did it, to what: in the audit log
        events = audit.page(session, audit.Query(limit=500)).events
    discards = [
        e
        for e in events
        if e.action == "changes.discard" and set(e.details["teams"]) & set(held_ids)
    ]
    releases = [e for e in events if e.action == "changes.release" and e.target == tripped.base_url]
    assert {e.actor for e in [*discards, *releases]} == {audit.cli_actor()}
    assert sorted(t for e in discards for t in e.details["teams"]) == held_ids[:2]
    assert {e.organization_id for e in discards} == {
        m.organization_id for m in tripped.members if m.team_id in held_ids[:2]
    }
    # One event per organization whose changes were released, in its own log.
    assert sorted(t for e in releases for t in e.details["teams"]) == held_ids[2:]
    assert sum(e.details["released"] for e in releases) == 2
    assert {e.organization_id for e in releases} == {
        m.organization_id for m in tripped.members if m.team_id in held_ids[2:]
    }


def test_a_tripped_guard_makes_the_health_report_unhealthy(tripped: Fleet) -> None:
    from worker.operations.health import Check, Report, read_tripped

    windows, thresholds = DatabaseWindows(), TRIPS_AFTER_THREE.thresholds
    found = read_tripped(
        tripped.sessions, lambda s: held.guard_report(s, windows, thresholds), timeout=10
    )
    assert found is not None
    mine = [g for g in found if g.base_url == tripped.base_url]
    checks = [Check(name, True, "ok", 0.0) for name in ("database", "broker", "worker")]

    report = Report(checks, [], mine).as_dict()

    assert report["healthy"] is False and report["error"]["code"] == "unhealthy"
    assert report["guard"]["tripped"] == [
        {"base_url": tripped.base_url, "since": mine[0].tripped_at.isoformat(), "held": 4}
    ]
    assert f"guard: tripped for {tripped.base_url}" in report["error"]["message"]
    assert Report(checks, [], []).as_dict()["healthy"] is True


# -- the HTTP API ------------------------------------------------------------------------


@pytest.fixture
def api(settings: Settings, redis_url: str) -> Iterator[str]:
    """The API in-process on the test's database (answers checked against the document)."""
    from tests.support.api import TOKEN, ApiThread
    from worker.web.api import ApiConfig
    from worker.web.client import ValidationClient

    client = ValidationClient(
        redis_url, settings.effective_database_url, queue=f"{NAMESPACE}-held-{uuid.uuid4().hex[:8]}"
    )
    with client, ApiThread(client, ApiConfig(token=TOKEN, max_wait=1)) as running:
        yield running.url


def test_the_api_reads_the_guard_and_the_held_changes_a_page_at_a_time(
    tripped: Fleet, api: str
) -> None:
    from urllib.parse import quote

    from tests.support.api import call

    guard = call(api, "GET", "/v1/guard")
    where = f"/v1/changes/held?base_url={quote(tripped.base_url, safe='')}"
    first = call(api, "GET", f"{where}&limit=3")
    second = call(api, "GET", f"{where}&limit=3&cursor={first.body['next_cursor']}")
    elsewhere = call(api, "GET", "/v1/changes/held?base_url=http%3A%2F%2Fnowhere.test%2F")

    assert guard.status == 200 and guard.body["where"] == "database"
    mine = next(g for g in guard.body["base_urls"] if g["base_url"] == tripped.base_url)
    assert mine == {
        "base_url": tripped.base_url, "tripped": True, "tripped_at": mine["tripped_at"],
        "checks": 6, "changes": 6, "organizations": 3, "trips": 1, "held": 4,
    }  # fmt: skip
    assert (first.status, second.status) == (200, 200)
    listed = [row["team_id"] for row in first.body["held"] + second.body["held"]]
    assert listed == sorted(m.team_id for m in tripped.members[2:])
    assert (len(first.body["held"]), second.body["next_cursor"]) == (3, None)
    row = first.body["held"][0]
    assert (row["old_status"], row["new_status"], row["http_status"]) == (
        "valid",
        "invalid_key",
        401,
    )
    assert elsewhere.body == {"held": [], "next_cursor": None}


def test_the_guard_routes_refuse_what_the_document_does_not_allow(api: str) -> None:
    from tests.support.api import call

    secret = "6a1f0c2e-9d3b-4f5e-8a7c-1b2d3e4f5a6b"
    for path in ("/v1/guard", "/v1/changes/held"):
        anonymous = call(api, "GET", path, auth=False)
        assert anonymous.status == 401 and anonymous.body["error"]["code"] == "unauthorized"
    refused = [
        call(api, "GET", f"/v1/guard?base_url={secret}"),
        call(api, "GET", f"/v1/changes/held?base_url={secret}"),
        call(api, "GET", "/v1/changes/held?status=valid"),
        call(api, "GET", "/v1/changes/held?limit=0"),
    ]
    assert [(a.status, a.body["error"]["code"]) for a in refused] == [(422, "invalid_request")] * 4
    assert all(secret not in a.text for a in refused)
