"""The worker's /metrics after a real run: the series exist and their values match it.

A prefork worker on Redis and PostgreSQL runs the checks, so the counts cross
processes (prometheus_client's multiprocess mode) before the main process serves
them. Counters are compared as the difference between a scrape before the run and
one after, so nothing earlier in the session can blur them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.orm import Session

from models import Requester, RequestState, Team, TeamStatus, ValidationRequest, utcnow
from tests.support.monitoring import Samples, check_all, install_direct, scrape, value
from tests.support.stacks import Stack
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

LATENCY = "ogv_opsgenie_request_duration_seconds_count"


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def run_checks(stack: Stack, fake: FakeOpsgenie) -> tuple[dict[str, str], str, list[str]]:
    """Every outcome and retry reason once; the throttled key on an account of its own."""
    main = install_direct(
        stack,
        fake,
        {
            "ok-1": KeyScenario("valid"),
            "ok-2": KeyScenario("valid"),
            "revoked": KeyScenario("invalid_key"),
            "flaky": KeyScenario("server_error", times=1),
            "down": KeyScenario("server_error", times=-1),
        },
    )
    throttled = install_direct(
        stack, fake, {"busy": KeyScenario("throttle", times=1, period_seconds=1)}
    )
    jobs = {
        label: (main["org"], main["integration"], team) for label, team in main["teams"].items()
    }
    jobs["busy"] = (throttled["org"], throttled["integration"], throttled["teams"]["busy"])
    jobs["missing"] = (main["org"], main["integration"], "no-such-team")
    outcomes = {label: str(view.outcome) for label, view in check_all(stack, jobs).items()}
    keys = [*main["keys"].values(), *throttled["keys"].values()]
    return outcomes, f"acct-{throttled['org']}", keys


def test_the_metrics_match_a_real_run(watched: Stack, fake: FakeOpsgenie) -> None:
    _, before = scrape(watched)
    outcomes, busy_account, keys = run_checks(watched, fake)
    page, after = scrape(watched)

    assert outcomes == {
        "ok-1": "valid",
        "ok-2": "valid",
        "revoked": "invalid_key",
        "flaky": "valid",
        "down": "error",
        "busy": "valid",
        "missing": "invalid_team",
    }
    counts = {
        (outcome, platform): delta(
            before, after, "ogv_validations_total", outcome=outcome, platform=platform
        )
        for outcome in ("valid", "invalid_key", "error", "invalid_team", "rejected")
        for platform in ("opsgenie", "none")  # none: decided without a call
    }
    assert {k: v for k, v in counts.items() if v} == {
        ("valid", "opsgenie"): 4,
        ("invalid_key", "opsgenie"): 1,
        ("error", "opsgenie"): 1,
        ("invalid_team", "none"): 1,
    }
    # flaky: one 503 then 200; down: 503 on all 3 attempts (2 retries); busy: one 429.
    retries = {
        reason: delta(before, after, "ogv_retries_total", reason=reason)
        for reason in ("server_error", "throttled", "timeout", "account_paused")
    }
    assert retries == {"server_error": 3, "throttled": 1, "timeout": 0, "account_paused": 0}
    assert delta(before, after, "ogv_rate_limit_pauses_total", account=busy_account) == 1
    calls = {
        status: delta(
            before, after, LATENCY, platform="opsgenie", probe="authenticate", status_class=status
        )
        for status in ("2xx", "4xx", "429", "5xx", "error")
    }
    assert calls == {"2xx": 4, "4xx": 1, "429": 1, "5xx": 4, "error": 0}
    assert [key for key in keys if key in page] == []


def teams_in_database(url: str) -> dict[str, float]:
    engine = create_engine(url)
    with Session(engine) as session:
        rows = session.execute(select(Team.status, func.count()).group_by(Team.status)).all()
    engine.dispose()
    counts = {status.value: 0.0 for status in TeamStatus}
    counts.update({status.value: float(count) for status, count in rows})
    return counts


def test_teams_by_status_is_the_database_now(watched: Stack, fake: FakeOpsgenie) -> None:
    install_direct(watched, fake, {"new": KeyScenario("valid")})  # at least one team `unknown`
    _, samples = scrape(watched)
    scraped = {
        status.value: value(samples, "ogv_teams", status=status.value) for status in TeamStatus
    }
    assert scraped == teams_in_database(watched.env["OGV_DATABASE_URL"])
    assert scraped["unknown"] >= 1


def test_oldest_pending_request_age(watched: Stack) -> None:
    engine = create_engine(watched.env["OGV_DATABASE_URL"])
    stuck_id = uuid.uuid4()
    stuck = ValidationRequest(
        id=stuck_id,
        organization_id=1,
        integration_id=1,
        team_id=f"stuck-{uuid.uuid4()}",
        requested_by=Requester.CLI,
        state=RequestState.PENDING,
        created_at=utcnow() - timedelta(minutes=10),
    )
    with Session(engine) as session, session.begin():
        session.add(stuck)  # never published: it stays pending
    try:
        _, samples = scrape(watched)
        with Session(engine) as session:
            oldest = session.scalar(
                select(func.min(ValidationRequest.created_at)).where(
                    ValidationRequest.state == RequestState.PENDING
                )
            )
        assert oldest is not None
        expected = (utcnow() - oldest).total_seconds()
        age = value(samples, "ogv_oldest_pending_request_age_seconds")
        assert age >= 600
        assert abs(age - expected) < 5
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ValidationRequest).where(ValidationRequest.id == stuck_id))
        engine.dispose()
