"""Confirmation and the mass-change guard, in-process: the window's arithmetic, its two
stores under concurrent writers, and the pipeline's writes on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

import pytest
import redis
from sqlalchemy import Engine, create_engine, delete, select

from models import GuardWindow, HeldChange, Outcome, RequestState, TeamStatus, TeamStatusChange
from tests.support.pipeline import Install, Installed, load, request_for
from tests.support.services import NAMESPACE
from worker.checks.guard import (
    BUCKETS,
    DatabaseWindows,
    Guard,
    RedisWindows,
    Thresholds,
    Window,
    Windows,
    admit,
    states,
)
from worker.checks.pipeline import Collaborators, Confirming, Finished, RetryLater, run_attempt
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

T = Thresholds(window=600.0, threshold=0.2, min_changes=20)
NOW = 1_800_000_000.0
URL = "https://api.opsgenie.com/"


def accounts(n: int, spread: int = 5) -> list[str]:
    return [f"acct-{i % spread}" for i in range(n)]


# --- the window's arithmetic ---------------------------------------------------------


def test_changes_within_the_allowance_are_written() -> None:
    window = Window()
    admitted = admit(window, T, NOW, URL, checks=200, accounts=accounts(40))
    # 40 changes among 200 checks is exactly the threshold (0.2): not over it.
    assert admitted.allowed == 40 and admitted.trip is None
    assert window.totals() == (200, 40, 3)


def test_the_change_that_crosses_the_threshold_trips_the_guard_and_is_held() -> None:
    window = Window()
    admit(window, T, NOW, URL, checks=100, accounts=[])
    # A batch of 50 changes: the k-th is over when k > 0.2 * (100 + k), so 25 pass.
    admitted = admit(window, T, NOW + 1, URL, checks=50, accounts=accounts(50))
    assert admitted.allowed == 25
    assert admitted.trip is not None
    assert (admitted.trip.checks, admitted.trip.changes, admitted.trip.accounts) == (126, 26, 3)
    # Held changes still count: the window stays over the threshold while they come.
    assert window.totals() == (150, 50, 3)
    again = admit(window, T, NOW + 2, URL, checks=10, accounts=accounts(10))
    assert again.allowed == 0 and again.trip is None


def test_fewer_changes_than_the_minimum_never_trip() -> None:
    window = Window()
    admitted = admit(window, T, NOW, URL, checks=19, accounts=accounts(19))
    assert admitted.allowed == 19 and admitted.trip is None


def test_one_account_revoking_every_key_never_trips() -> None:
    window = Window()
    admitted = admit(window, T, NOW, URL, checks=100, accounts=["acme"] * 100)
    assert admitted.allowed == 100 and admitted.trip is None
    two = admit(window, T, NOW, URL, checks=50, accounts=["acme", "globex"] * 25)
    assert two.allowed == 50 and two.trip is None
    three = admit(window, T, NOW, URL, checks=1, accounts=["initech"])
    assert three.allowed == 0 and three.trip is not None


def test_the_guard_resets_once_a_window_passes_under_the_threshold() -> None:
    window = Window()
    assert admit(window, T, NOW, URL, checks=30, accounts=accounts(30)).trip is not None
    assert window.tripped(NOW + 599, T)
    # Past a whole window the old buckets are gone, and the counts are under it.
    later = NOW + T.window + T.window / BUCKETS
    assert not window.tripped(later, T)
    admitted = admit(window, T, later, URL, checks=100, accounts=accounts(5))
    assert admitted.reset and admitted.allowed == 5 and window.tripped_at is None
    assert window.trips == 1


def test_a_storm_that_goes_on_keeps_the_guard_tripped_past_its_window() -> None:
    window = Window()
    admit(window, T, NOW, URL, checks=30, accounts=accounts(30))
    for minute in range(1, 12):
        admitted = admit(window, T, NOW + 60 * minute, URL, checks=30, accounts=accounts(30))
        assert admitted.allowed == 0 and not admitted.reset
    assert window.trips == 1


def test_the_window_survives_its_json_document() -> None:
    window = Window()
    admit(window, T, NOW, URL, checks=30, accounts=accounts(30))
    copy = Window.from_json(window.to_json())
    assert copy.totals() == window.totals() and copy.tripped_at == window.tripped_at
    assert copy.trips == 1


# --- the two stores, under concurrent writers -----------------------------------------


def concurrent_admits(windows: Windows, engine: Engine | None, base_url: str) -> list[object]:
    """Eight threads count 50 checks with 10 changes over 5 accounts each, at once."""
    results: list[object] = []
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        if engine is None:
            results.append(windows.admit(None, base_url, T, 50, accounts(10)))  # type: ignore[arg-type]
            return
        with engine.begin() as connection:
            results.append(windows.admit(connection, base_url, T, 50, accounts(10)))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def assert_counted_once_each(results: list[object], window: Window) -> None:
    # 400 checks and 80 changes: 0.2 exactly, so no trip, and nothing lost to a race.
    assert len(results) == 8
    assert window.totals() == (400, 80, 3)
    assert all(getattr(r, "allowed", None) == 10 for r in results)


def test_redis_windows_count_every_concurrent_batch(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    windows = RedisWindows(client, f"{NAMESPACE}-guard-{uuid.uuid4().hex[:8]}")
    base_url = f"https://{uuid.uuid4().hex[:8]}.example/"
    results = concurrent_admits(windows, None, base_url)
    assert_counted_once_each(results, windows.read(None)[base_url])  # type: ignore[arg-type]
    tripped = windows.admit(None, base_url, T, 1, ["x"])  # type: ignore[arg-type]
    assert tripped.trip is not None
    assert windows.admit(None, base_url, T, 1, ["y"]).trip is None  # type: ignore[arg-type]


def test_database_windows_count_every_concurrent_batch(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    windows = DatabaseWindows()
    base_url = f"https://{uuid.uuid4().hex[:8]}.example/"
    results = concurrent_admits(windows, engine, base_url)
    with engine.connect() as connection:
        assert_counted_once_each(results, windows.read(connection)[base_url])
        found = {s.base_url: s for s in states(windows, connection, T)}
    assert not found[base_url].tripped and found[base_url].changes == 80
    engine.dispose()


# --- the pipeline's writes -------------------------------------------------------------


@pytest.fixture
def confirming(deps: Collaborators) -> Collaborators:
    return replace(deps, guard=Guard(confirm_after=30.0, thresholds=T, windows=DatabaseWindows()))


def valid_team(deps: Collaborators, install: Install) -> Installed:
    installed = install(KeyScenario("valid"))
    step = run_attempt(request_for(deps, installed), deps)
    assert isinstance(step, Finished) and step.result.outcome is Outcome.VALID
    return installed


def test_a_failing_verdict_about_a_valid_team_waits_for_a_second_check(
    confirming: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    installed = valid_team(confirming, install)
    fake.set_key(installed.key, KeyScenario("invalid_key"))
    request_id = request_for(confirming, installed)
    step = run_attempt(request_id, confirming)
    assert isinstance(step, RetryLater) and isinstance(step.error, Confirming)
    assert step.delay == 30.0
    request, team = load(confirming, request_id)
    assert request.state is RequestState.CONFIRMING
    assert request.confirming_outcome is Outcome.INVALID_KEY and request.outcome is None
    assert request.next_attempt_at is not None and "second check" in (request.message or "")
    assert team is not None and team.status is TeamStatus.VALID

    second = run_attempt(request_id, confirming)
    assert isinstance(second, Finished) and second.result.outcome is Outcome.INVALID_KEY
    request, team = load(confirming, request_id)
    assert request.state is RequestState.DONE and request.confirmation == "confirmed"
    assert team is not None and team.status is TeamStatus.INVALID_KEY


def test_a_second_check_that_disagrees_keeps_the_team_valid(
    confirming: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    installed = valid_team(confirming, install)
    fake.set_key(installed.key, KeyScenario("invalid_key"))
    request_id = request_for(confirming, installed)
    assert isinstance(run_attempt(request_id, confirming), RetryLater)
    fake.set_key(installed.key, KeyScenario("valid"))
    second = run_attempt(request_id, confirming)
    assert isinstance(second, Finished) and second.result.outcome is Outcome.VALID
    request, team = load(confirming, request_id)
    assert request.confirmation == "disagreed" and request.outcome is Outcome.VALID
    assert team is not None and team.status is TeamStatus.VALID


def test_another_failing_verdict_on_the_second_check_changes_nothing_yet(
    confirming: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    installed = valid_team(confirming, install)
    fake.set_key(installed.key, KeyScenario("invalid_key"))
    request_id = request_for(confirming, installed)
    assert isinstance(run_attempt(request_id, confirming), RetryLater)
    fake.set_key(installed.key, KeyScenario("no_access"))
    second = run_attempt(request_id, confirming)
    assert isinstance(second, Finished) and second.result.outcome is Outcome.KEY_LACKS_ACCESS
    request, team = load(confirming, request_id)
    assert request.confirmation == "disagreed"
    assert team is not None and team.status is TeamStatus.VALID


def test_a_new_or_failing_team_needs_no_confirmation(
    confirming: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    installed = install(KeyScenario("invalid_key"))  # unknown: a key just saved
    first = run_attempt(request_for(confirming, installed), confirming)
    assert isinstance(first, Finished) and first.result.outcome is Outcome.INVALID_KEY
    fake.set_key(installed.key, KeyScenario("no_access"))  # failing to failing
    second = run_attempt(request_for(confirming, installed), confirming)
    assert isinstance(second, Finished) and second.result.outcome is Outcome.KEY_LACKS_ACCESS
    _, team = load(confirming, request_for(confirming, installed))
    assert team is not None and team.status is TeamStatus.KEY_LACKS_ACCESS


def test_a_tripped_guard_holds_the_change_and_a_valid_recheck_drops_it(
    deps: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    # A guard that trips on its first change: the window already holds two changes of
    # two other accounts, so this team's account is the third.
    windows = DatabaseWindows()
    guarded = replace(deps, guard=Guard(0.0, Thresholds(600.0, 0.2, 1), windows))
    installed = valid_team(guarded, install)
    base_url = fake.url
    with guarded.sessions.begin() as session:
        windows.admit(session.connection(), base_url, guarded.guard.thresholds, 2, ["a", "b"])
    try:
        held_then_dropped(guarded, installed, fake, base_url)
    finally:  # the session's database is shared: leave no tripped guard behind
        with guarded.sessions.begin() as session:
            session.execute(delete(GuardWindow).where(GuardWindow.base_url == base_url))


def held_then_dropped(
    guarded: Collaborators, installed: Installed, fake: FakeOpsgenie, base_url: str
) -> None:
    fake.set_key(installed.key, KeyScenario("invalid_key"))
    request_id = request_for(guarded, installed)
    step = run_attempt(request_id, guarded)
    assert isinstance(step, Finished) and step.result.outcome is Outcome.INVALID_KEY
    request, team = load(guarded, request_id)
    assert team is not None and team.status is TeamStatus.VALID
    assert "held" in (request.message or "") and "ogv changes release" in (request.message or "")
    with guarded.sessions() as session:
        held = session.scalars(select(HeldChange).where(HeldChange.team_id == team.id)).one()
        assert (held.old_status, held.new_status) == (TeamStatus.VALID, TeamStatus.INVALID_KEY)
        assert held.http_status == 401 and held.base_url == base_url
        assert held.request_id == request_id and held.key_version == team.key_version
        assert installed.key not in (held.message or "")
        history = session.scalars(
            select(TeamStatusChange).where(TeamStatusChange.request_id == request_id)
        ).all()
        assert history == []

    fake.set_key(installed.key, KeyScenario("valid"))
    assert isinstance(run_attempt(request_for(guarded, installed), guarded), Finished)
    with guarded.sessions() as session:
        assert session.scalars(select(HeldChange).where(HeldChange.team_id == team.id)).all() == []


def test_an_unreachable_shared_redis_is_retried_and_a_503_not_a_crash() -> None:
    """Counting or reading a window on a Redis that cannot be reached raises
    SharedStateUnavailable: a batch's write is then retried whole (as a lost database
    connection is), and the API answers 503 `shared_state_unavailable`."""
    import asyncio

    from worker.checks.guard import SharedStateUnavailable
    from worker.checks.retries import is_retried_database_error
    from worker.web.errors import ApiError, off_loop

    gone = RedisWindows(redis.Redis.from_url("redis://127.0.0.1:1/0"), "guard-gone")
    with pytest.raises(SharedStateUnavailable) as counted:
        gone.admit(None, URL, T, 1, ["acme"])  # type: ignore[arg-type]
    assert is_retried_database_error(counted.value)
    with pytest.raises(SharedStateUnavailable):
        gone.read(None)  # type: ignore[arg-type]

    with pytest.raises(ApiError) as refused:
        asyncio.run(off_loop(lambda: gone.read(None)))  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (503, "shared_state_unavailable")
