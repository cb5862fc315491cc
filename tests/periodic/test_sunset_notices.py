"""The sunset's notices: once each at 30, 7 and 1 days, across runs; the health and gauge."""

from __future__ import annotations

import itertools
import uuid
from datetime import date, timedelta

from sqlalchemy import select

from models import SunsetNotice, Team
from worker import inventory, readiness
from worker.checks.pipeline import Collaborators
from worker.metrics import DatabaseCollector
from worker.operations.health import Check, Report, read_sunset
from worker.periodic import sunset
from worker.platforms import JSM_OPS, OPSGENIE, Platform
from worker.settings import Settings

_orgs = itertools.count(9_000_000 + uuid.uuid4().int % 10_000 * 1000)
MIGRATED = date(2026, 10, 1)  # its deadline: 2027-01-29
DEADLINE = MIGRATED + timedelta(days=120)


def account(
    deps: Collaborators,
    settings: Settings,
    platform: Platform = OPSGENIE,
    jsm_ops: str | None = None,
    org: int | None = None,
) -> tuple[int, int]:
    """A new organization (or `org`) with one account migrated on MIGRATED and one team."""
    org = org or next(_orgs)
    with deps.sessions.begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"acct-{uuid.uuid4().hex[:10]}",
            base_url=deps.options.base_urls[platform.name],
            allowed_base_urls=settings.allowed_base_urls,
            platform=platform,
        )
        inventory.update_dates(session, integration.id, migrated_on=MIGRATED)
        team = inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration.id,
            label="payments",
            integration_key=f"key-{uuid.uuid4()}",
            vault=deps.vault,
        )
        team.jsm_ops = jsm_ops
        return org, integration.id


def test_each_threshold_is_announced_once_whatever_runs(
    deps: Collaborators, settings: Settings
) -> None:
    org, integration = account(deps, settings)
    account(deps, settings, org=org)  # a second account of the same organization
    published: list[int] = []

    def run(days_before: int) -> list[int]:
        found = sunset.announce(deps.sessions, published.append, DEADLINE - timedelta(days_before))
        return [n for n in found if notice(deps, n).integration_id == integration]

    assert run(31) == []
    first = run(30)
    assert run(29) == [] and run(30) == []  # a restarted beat, a second beat
    # Skipped ahead to 5 days: the 7-day notice alone; 30 is not sent late.
    second = run(5)
    third = run(1)
    assert run(0) == []
    assert [
        (notice(deps, n).threshold, notice(deps, n).days_left) for n in first + second + third
    ] == [
        (30, 30),
        (7, 5),
        (1, 1),
    ]
    assert set(first + second + third) <= set(published)

    with deps.sessions() as session:
        doc = sunset.document(session, third[0], DEADLINE - timedelta(days=1))
    assert doc == {
        "event": "sunset.approaching",
        "notice_id": third[0],
        "integration_id": integration,
        "organization_ids": [org],
        "deadline": DEADLINE.isoformat(),
        "deadline_reason": "migrated",
        "threshold": 1,
        "days_left": 1,
        "teams_not_ready": 1,
        "hint": doc["hint"],
    }
    assert doc["hint"]["code"] == "deadline_close"
    assert f"integration {integration}" in doc["hint"]["text"]


def notice(deps: Collaborators, notice_id: int) -> SunsetNotice:
    with deps.sessions() as session:
        found = session.get(SunsetNotice, notice_id)
        assert found is not None
        session.expunge(found)
        return found


def test_a_delivered_notice_is_not_sent_again_and_a_lost_one_is(
    deps: Collaborators, settings: Settings
) -> None:
    _, integration = account(deps, settings)
    [delivered] = sunset.announce(deps.sessions, lambda n: None, DEADLINE - timedelta(days=20))
    with deps.sessions.begin() as session:
        assert sunset.document(session, delivered, DEADLINE) is not None
        sunset.mark_delivered(session, delivered)
    with deps.sessions() as session:
        assert sunset.document(session, delivered) is None
        assert delivered not in sunset.undelivered(session, timedelta(0), max_attempts=8)
    [lost] = sunset.announce(deps.sessions, lambda n: None, DEADLINE - timedelta(days=3))
    with deps.sessions() as session:
        assert lost in sunset.undelivered(session, timedelta(0), max_attempts=8)
        assert lost not in sunset.undelivered(session, timedelta(hours=1), max_attempts=8)
    assert notice(deps, lost).integration_id == integration


def test_integrations_ready_or_on_jsm_ops_are_not_at_risk(
    deps: Collaborators, settings: Settings
) -> None:
    org, _ = account(deps, settings, jsm_ops="works")
    account(deps, settings, platform=JSM_OPS, org=org)
    _, risky = account(deps, settings, jsm_ops="fails", org=org)
    with deps.sessions() as session:
        found = readiness.at_risk(session, DEADLINE - timedelta(days=10), organization_id=org)
        teams = session.scalars(select(Team.jsm_ops)).all()
    assert "works" in teams
    assert [(r.integration_id, r.days_left, r.deadline_reason) for r in found] == [
        (risky, 10, "migrated")
    ]


def test_health_warns_at_30_days_and_fails_at_7(deps: Collaborators, settings: Settings) -> None:
    org, integration = account(deps, settings)
    ok = [Check("database", True, "ok", 0.0)]

    def report(days_before: int) -> Report:
        found = read_sunset(deps.sessions, 10, DEADLINE - timedelta(days=days_before))
        assert found is not None
        mine = [r for r in found if r.integration_id == integration]
        return Report(ok, sunset=mine)

    far, warning, failing = report(31), report(30), report(7)
    assert (far.sunset, far.healthy) == ([], True)
    assert (len(warning.sunset or []), warning.healthy, warning.failing_sunset) == (1, True, [])
    assert (len(failing.failing_sunset), failing.healthy) == (1, False)
    shown = failing.as_dict()
    assert shown["sunset"]["failing"] is True
    assert shown["sunset"]["integrations"] == [
        {
            "organization_id": org,
            "integration_id": integration,
            "platform": "opsgenie",
            "teams": 1,
            "deadline": DEADLINE.isoformat(),
            "deadline_reason": "migrated",
            "days_left": 7,
        }
    ]
    assert "sunset:" in shown["error"]["message"]


def test_the_gauge_is_each_organizations_nearest_deadline(
    deps: Collaborators, settings: Settings
) -> None:
    org, _ = account(deps, settings)
    _, sooner = account(deps, settings, org=org)
    with deps.sessions.begin() as session:
        # The organization's other account was switched off already: its nearest is 0.
        inventory.update_dates(session, sooner, switched_off_on=MIGRATED + timedelta(days=1))
    families = {f.name: f for f in DatabaseCollector(deps.sessions).collect()}
    samples = {s.labels["organization"]: s.value for s in families["ogv_sunset_days_left"].samples}
    assert samples[str(org)] == 0
