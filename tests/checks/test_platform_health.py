"""The monitor of how each base URL answers (worker/checks/platform_health.py).

The window logic runs on SQLite and PostgreSQL with explicit clocks; concurrent
recorders show that a transition happens once; the pipeline feeds it from real
answers of the fake Opsgenie; `ogv status`, `ogv platforms`, the health report and
the metrics read it back.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from models import Outcome, PlatformHealth, utcnow
from models.db import build_engine, session_factory
from tests.support.cli import call
from tests.support.pipeline import Install, request_for
from worker import metrics
from worker.checks import platform_health
from worker.checks.opsgenie import ServerError, UnrecognisedAnswer
from worker.checks.pipeline import Collaborators, run_attempt
from worker.checks.platform_health import Tally, Thresholds, Transition, record
from worker.checks.rules import Result, Target
from worker.metrics import DatabaseCollector
from worker.operations.health import Check, Report
from worker.platforms import JSM_OPS, OPSGENIE
from worker.settings import get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

T0 = datetime(2027, 4, 5, 12, 0, tzinfo=UTC)
THRESHOLDS = Thresholds(window=timedelta(seconds=300), min_answers=20)


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    return session_factory(database_url)


@pytest.fixture
def base_url(sessions: sessionmaker[Session]) -> Iterator[str]:
    """A base URL of this test's own: the database is shared by the whole session."""
    url = f"https://{uuid.uuid4().hex[:12]}.example/"
    yield url
    with sessions.begin() as session:
        session.execute(delete(PlatformHealth).where(PlatformHealth.base_url == url))


def add(
    sessions: sessionmaker[Session],
    base_url: str,
    answers: int,
    unrecognised: int,
    at: datetime,
    thresholds: Thresholds = THRESHOLDS,
) -> list[Transition]:
    with sessions.begin() as session:
        return record(session, {base_url: Tally("opsgenie", answers, unrecognised)}, thresholds, at)


def row(sessions: sessionmaker[Session], base_url: str) -> PlatformHealth:
    with sessions() as session:
        found = session.get(PlatformHealth, base_url)
        assert found is not None
        return found


def test_most_answers_unrecognised_turns_a_base_url_unavailable_once(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    assert add(sessions, base_url, 19, 19, T0) == []  # below the minimum: no decision
    [turned] = add(sessions, base_url, 1, 1, T0 + timedelta(seconds=10))
    assert turned == Transition(
        base_url, "opsgenie", "unavailable", T0 + timedelta(seconds=10), 20, 20
    )
    state = row(sessions, base_url)
    assert state.unavailable_since == T0 + timedelta(seconds=10)
    assert state.changed_at == T0 + timedelta(seconds=10)
    assert (state.window_started_at, state.answers, state.unrecognised) == (
        T0 + timedelta(seconds=10),
        0,
        0,
    )
    # Still failing, in this window and the next: nothing more to announce.
    assert add(sessions, base_url, 30, 30, T0 + timedelta(seconds=20)) == []
    assert add(sessions, base_url, 30, 30, T0 + timedelta(seconds=400)) == []
    assert row(sessions, base_url).unavailable_since == T0 + timedelta(seconds=10)


def test_half_unrecognised_is_not_unavailable_but_is_recovered(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    assert add(sessions, base_url, 20, 10, T0) == []  # more than half is needed
    assert add(sessions, base_url, 20, 20, T0 + timedelta(seconds=1))[0].state == "unavailable"
    [back] = add(sessions, base_url, 20, 10, T0 + timedelta(seconds=2))  # at most half
    assert back == Transition(base_url, "opsgenie", "recovered", T0 + timedelta(seconds=2), 20, 10)
    state = row(sessions, base_url)
    assert (state.unavailable_since, state.changed_at) == (None, T0 + timedelta(seconds=2))
    assert (state.answers, state.unrecognised) == (0, 0)
    assert add(sessions, base_url, 20, 0, T0 + timedelta(seconds=3)) == []  # recovered once


def test_a_window_older_than_the_setting_restarts_at_zero(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    assert add(sessions, base_url, 15, 15, T0) == []
    # 300 s later the 15 are forgotten: 10 answers are below the minimum.
    assert add(sessions, base_url, 10, 10, T0 + timedelta(seconds=300)) == []
    state = row(sessions, base_url)
    assert (state.window_started_at, state.answers, state.unrecognised) == (
        T0 + timedelta(seconds=300),
        10,
        10,
    )
    # Within the new window they add up.
    assert add(sessions, base_url, 10, 10, T0 + timedelta(seconds=599))[0].state == "unavailable"


def test_a_window_of_good_answers_outweighs_a_few_bad_ones(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    assert add(sessions, base_url, 100, 0, T0) == []
    assert add(sessions, base_url, 60, 60, T0 + timedelta(seconds=60)) == []  # 60 of 160
    # The host turned bad: once the good window has passed, the bad one decides.
    assert add(sessions, base_url, 20, 20, T0 + timedelta(seconds=301))[0].state == "unavailable"


def test_a_batch_records_each_base_url_of_its_own(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    other = base_url.replace("https://", "https://other-")
    try:
        with sessions.begin() as session:
            turned = record(
                session,
                {base_url: Tally("opsgenie", 20, 20), other: Tally("jsm-ops", 20, 1)},
                THRESHOLDS,
                T0,
            )
        assert [(t.base_url, t.state) for t in turned] == [(base_url, "unavailable")]
        assert (row(sessions, other).platform, row(sessions, other).answers) == ("jsm-ops", 20)
    finally:
        with sessions.begin() as session:
            session.execute(delete(PlatformHealth).where(PlatformHealth.base_url == other))


def test_concurrent_recorders_make_one_transition(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    """Eight workers record bad answers at once, 120 in all: one of them turns it."""
    start = threading.Barrier(8)

    def worker(_: int) -> list[Transition]:
        start.wait()
        made = []
        for _ in range(5):
            made += add(sessions, base_url, 3, 3, utcnow())
        return made

    with ThreadPoolExecutor(8) as pool:
        made = list(itertools.chain.from_iterable(pool.map(worker, range(8))))
    assert [t.state for t in made] == ["unavailable"]
    assert row(sessions, base_url).unavailable_since == made[0].at


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_row_lock_decides_between_two_recorders(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    """The second recorder waits for the first one's commit, then sees its transition."""
    add(sessions, base_url, 19, 19, T0)
    first = sessions()
    first.begin()
    [turned] = record(first, {base_url: Tally("opsgenie", 1, 1)}, THRESHOLDS, T0)
    second: list[list[Transition]] = []
    waiting = threading.Thread(
        target=lambda: second.append(add(sessions, base_url, 20, 20, T0 + timedelta(seconds=1)))
    )
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # blocked on the row lock
    first.commit()
    first.close()
    waiting.join(10)
    assert turned.state == "unavailable" and second == [[]]
    assert row(sessions, base_url).answers == 20  # its answers counted in the new window


def target(base_url: str, platform: str = "opsgenie") -> Target:
    return Target(
        team_id="1-ops",
        label="ops",
        account="acme",
        integration_id=1,
        base_url=base_url,
        key="secret-key",
        key_version=1,
        platform=OPSGENIE if platform == "opsgenie" else JSM_OPS,
        probe="alerts",
    )


def test_only_answers_are_tallied() -> None:
    us, jsm = "https://api.opsgenie.com/", "https://api.atlassian.com/jsm/ops/integration/"
    tallies = platform_health.tally(
        [
            (target(us), Result(Outcome.VALID, "works", 200)),
            (target(us), Result(Outcome.INVALID_KEY, "no", 401)),
            (target(us), UnrecognisedAnswer("a 410", 410)),
            (target(us), ServerError("503", 503)),  # no answer about anything
            (target(us), Result(Outcome.ERROR, "not allowed", error_code="base_url_not_allowed")),
            (target(jsm, "jsm-ops"), UnrecognisedAnswer("html", 404)),
        ]
    )
    assert tallies == {us: Tally("opsgenie", 3, 1), jsm: Tally("jsm-ops", 1, 1)}


def test_a_transition_is_announced_in_a_log_event_a_metric_and_a_document(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Transition("https://api.opsgenie.com/", "opsgenie", "unavailable", T0, 25, 24)
    up = replace(down, state="recovered", answers=30, unrecognised=2)
    before = metrics.PLATFORM_TRANSITIONS.labels("opsgenie", "unavailable")._value.get()
    with caplog.at_level(logging.INFO, logger="ogv.platform_health"):
        platform_health.announce(down)
        platform_health.announce(up)
    assert metrics.PLATFORM_TRANSITIONS.labels("opsgenie", "unavailable")._value.get() == before + 1
    logged = [
        (r.levelname, r.getMessage(), r.base_url, r.platform, r.answers, r.unrecognised)  # type: ignore[attr-defined]
        for r in caplog.records
    ]
    assert logged == [
        ("WARNING", "platform.unavailable", down.base_url, "opsgenie", 25, 24),
        ("INFO", "platform.recovered", down.base_url, "opsgenie", 30, 2),
    ]
    assert down.document() == {
        "event": "platform.unavailable",
        "base_url": "https://api.opsgenie.com/",
        "platform": "opsgenie",
        "since": T0.isoformat(),
        "answers": 25,
        "unrecognised": 24,
    }
    assert up.document() == {
        "event": "platform.recovered",
        "base_url": "https://api.opsgenie.com/",
        "platform": "opsgenie",
        "at": T0.isoformat(),
        "answers": 30,
        "unrecognised": 2,
    }
    key = platform_health.idempotency_key(down.document())
    assert key == platform_health.idempotency_key(json.loads(json.dumps(down.document())))
    assert key != platform_health.idempotency_key(up.document())


def test_a_database_failure_is_logged_and_swallowed(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    broken = sessionmaker(build_engine(f"sqlite:///{tmp_path}/empty.sqlite3"))  # no tables
    answered = [(target("https://api.opsgenie.com/"), UnrecognisedAnswer("a 410", 410))]
    with caplog.at_level(logging.WARNING, logger="ogv.platform_health"):
        assert platform_health.observe(broken, answered, THRESHOLDS) == []
    [failed] = caplog.records
    assert failed.getMessage() == "platform_health.record_failed"
    assert failed.base_urls == ["https://api.opsgenie.com/"]  # type: ignore[attr-defined]
    assert "secret-key" not in caplog.text


def test_a_failing_notifier_does_not_undo_the_transition(
    sessions: sessionmaker[Session], base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(transitions: list[Transition]) -> None:
        raise ConnectionError("the broker is down")

    answered = [(target(base_url), UnrecognisedAnswer("a 410", 410))] * 20
    with caplog.at_level(logging.WARNING, logger="ogv.platform_health"):
        [turned] = platform_health.observe(sessions, answered, THRESHOLDS, broker_down)
    assert turned.state == "unavailable"
    assert row(sessions, base_url).unavailable_since is not None
    assert [r.getMessage() for r in caplog.records] == [
        "platform.unavailable",
        "platform_health.notify_failed",
    ]


def test_the_pipeline_watches_real_answers(
    deps: Collaborators,
    install: Install,
    fake: FakeOpsgenie,
) -> None:
    """A retired host: four checks answer 410 and it turns unavailable once; after the
    host is back, four genuine answers recover it. No status changes on the way."""
    with deps.sessions.begin() as session:
        session.execute(delete(PlatformHealth).where(PlatformHealth.base_url == fake.url))
    announced: list[Transition] = []
    watching = replace(
        deps,
        platform_thresholds=Thresholds(timedelta(seconds=300), min_answers=4),
        on_platform_transitions=announced.extend,
    )
    teams = [install(KeyScenario("valid"), label=f"t{i}") for i in range(6)]
    fake.set_host("opsgenie", "retired")
    try:
        for team in teams:
            run_attempt(request_for(deps, team), watching)
    finally:
        fake.set_host("opsgenie", None)
    assert [(t.base_url, t.state, t.answers, t.unrecognised) for t in announced] == [
        (fake.url, "unavailable", 4, 4)
    ]
    for team in teams[:4]:
        run_attempt(request_for(deps, team), watching)  # pending since the 410: run again
    assert [t.state for t in announced] == ["unavailable", "recovered"]
    with deps.sessions() as session:
        assert (
            session.scalar(
                select(PlatformHealth.unavailable_since).where(PlatformHealth.base_url == fake.url)
            )
            is None
        )
        session.execute(delete(PlatformHealth).where(PlatformHealth.base_url == fake.url))
        session.commit()


def test_the_gauge_is_read_from_the_database(
    sessions: sessionmaker[Session], base_url: str
) -> None:
    add(sessions, base_url, 20, 20, utcnow())
    families = {f.name: f for f in DatabaseCollector(sessions).collect()}
    samples = {
        tuple(s.labels.values()): s.value for s in families["ogv_platform_unavailable"].samples
    }
    assert samples[(base_url, "opsgenie")] == 1.0
    add(sessions, base_url, 20, 0, utcnow())
    families = {f.name: f for f in DatabaseCollector(sessions).collect()}
    samples = {
        tuple(s.labels.values()): s.value for s in families["ogv_platform_unavailable"].samples
    }
    assert samples[(base_url, "opsgenie")] == 0.0


def test_the_thresholds_come_from_validated_settings(fernet_key: str) -> None:
    from pydantic import ValidationError

    from worker.settings import Settings

    defaults = Thresholds.from_settings(Settings(encryption_keys=[fernet_key]))
    assert defaults == Thresholds(timedelta(seconds=300), 20)
    chosen = Settings(encryption_keys=[fernet_key], platform_window=3, platform_min_answers=5)
    assert Thresholds.from_settings(chosen) == Thresholds(timedelta(seconds=3), 5)
    for refused in ({"platform_window": 0}, {"platform_min_answers": 0}):
        with pytest.raises(ValidationError):
            Settings(encryption_keys=[fernet_key], **refused)  # type: ignore[arg-type]


def test_health_lists_unavailable_platforms_without_turning_unhealthy() -> None:
    since = T0
    down = platform_health.PlatformState(
        "https://api.opsgenie.com/", "opsgenie", True, since, since, since, 0, 0
    )
    ok = [Check(name, True, "fine", 0.01) for name in ("database", "broker", "worker")]
    report = Report(ok, [down]).as_dict()
    assert report["healthy"] is True and "error" not in report
    assert report["platforms"]["unavailable"] == [
        {"base_url": "https://api.opsgenie.com/", "platform": "opsgenie", "since": T0.isoformat()}
    ]
    assert "does not make this service unhealthy" in report["platforms"]["message"]
    assert "https://api.opsgenie.com/ (opsgenie) since" in report["platforms"]["message"]
    assert Report(ok, None).as_dict()["platforms"] == {
        "unavailable": None,
        "message": "not read: the database must work",
    }


def test_status_and_platforms_commands_show_an_unavailable_base_url(
    cli_env: None,
) -> None:
    from typer.testing import CliRunner

    from worker.operations.cli import app

    sessions = session_factory(get_settings().effective_database_url)
    url = "https://api.opsgenie.com/"
    add(sessions, url, 20, 20, T0)
    code, rows = call("platforms")
    assert code == 0
    assert rows == [
        {
            "base_url": url,
            "platform": "opsgenie",
            "unavailable": True,
            "unavailable_since": T0.isoformat(),
            "changed_at": T0.isoformat(),
            "window_started_at": T0.isoformat(),
            "answers": 0,
            "unrecognised": 0,
        }
    ]
    code, listing = call("status")
    assert (code, listing["teams"]) == (0, [])  # the unavailable base URL is text only
    shown = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    first = shown.stdout.splitlines()[0]
    assert first.startswith("platforms: unavailable: https://api.opsgenie.com/ (opsgenie)")
    listed = CliRunner().invoke(app, ["platforms"], env={"COLUMNS": "200"})
    assert "unavailable" in listed.stdout and url in listed.stdout
