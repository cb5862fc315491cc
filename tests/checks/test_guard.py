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
    Admission,
    DatabaseWindows,
    Entry,
    Guard,
    RedisWindows,
    Thresholds,
    Totals,
    Window,
    Windows,
    admit,
    claim_trip,
    states,
)
from worker.checks.pipeline import Collaborators, Confirming, Finished, RetryLater, run_attempt
from worker.enqueue import get_request
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

T = Thresholds(window=600.0, threshold=0.2, min_changes=20)
NOW = 1_800_000_000.0
URL = "https://api.opsgenie.com/"


def checks(n: int) -> list[Entry]:
    """`n` checks of valid teams that stayed valid."""
    return [Entry(uuid.uuid4().hex, 1, change=False) for _ in range(n)]


def changes(n: int, spread: int = 5, first: int = 1) -> list[Entry]:
    """`n` changes from valid to failing, dealt over organizations first..first+spread-1."""
    return [Entry(uuid.uuid4().hex, first + i % spread, change=True) for i in range(n)]


def held_of(admitted: Admission, entries: list[Entry]) -> list[int]:
    """The positions of the held changes among `entries`."""
    return [i for i, e in enumerate(entries) if e.request_id in admitted.held]


# --- the window's arithmetic ---------------------------------------------------------


def test_changes_within_the_allowance_are_written() -> None:
    window = Window()
    admitted = admit(window, T, NOW, URL, checks(160) + changes(40))
    # 8 changes from each of 5 organizations count as 7 (the cap, ⌈20 / 3⌉): 35 of 195.
    assert admitted.held == frozenset() and admitted.trip is None
    assert window.totals(T) == Totals(200, 40, 5, 195, 35)


def test_the_change_that_crosses_the_threshold_trips_the_guard_and_is_held() -> None:
    window = Window()
    admit(window, T, NOW, URL, checks(100))
    # 50 changes over 5 organizations: the k-th is over when k > 0.2 * (100 + k).
    storm = changes(50)
    admitted = admit(window, T, NOW + 1, URL, storm)
    assert held_of(admitted, storm) == list(range(25, 50))
    assert admitted.trip is not None
    trip = admitted.trip
    assert (trip.checks, trip.changes, trip.organizations, trip.number) == (126, 26, 5, 1)
    # Held changes still count (each organization's up to the cap).
    assert window.totals(T) == Totals(150, 50, 5, 135, 35)
    assert claim_trip(window, trip) and not claim_trip(window, trip)
    more = changes(10)
    again = admit(window, T, NOW + 2, URL, more)
    assert held_of(again, more) == list(range(10)) and again.trip is None


def test_fewer_changes_than_the_minimum_never_trip() -> None:
    window = Window()
    admitted = admit(window, T, NOW, URL, changes(19, spread=19))
    assert admitted.held == frozenset() and admitted.trip is None


def test_one_organization_revoking_every_key_never_trips() -> None:
    window = Window()
    one = admit(window, T, NOW, URL, changes(100, spread=1, first=7))
    assert one.held == frozenset() and one.trip is None
    two = admit(window, T, NOW, URL, changes(50, spread=1, first=8))
    assert two.held == frozenset() and two.trip is None
    # Three organizations, but the first two count for 7 changes each: the third must
    # bring 6 of its own before the 20 a trip needs are there.
    third = changes(6, spread=1, first=9)
    tripped = admit(window, T, NOW, URL, third)
    assert held_of(tripped, third) == [5] and tripped.trip is not None
    assert window.totals(T).organizations == 3


def test_one_organization_cannot_hold_another_organizations_revocation() -> None:
    """SPEC §8: one organization with three self-named accounts revokes 21 of its own
    keys, while three other organizations each genuinely revoke one: all are written."""
    window = Window()
    attacker = changes(21, spread=1, first=400)
    victims = changes(3, spread=3, first=500)
    admitted = admit(window, T, NOW, URL, attacker + victims)
    assert admitted.held == frozenset() and admitted.trip is None
    # 7 + 1 + 1 + 1 counted changes: under the 20 a trip needs, over any share.
    assert window.totals(T) == Totals(24, 24, 4, 10, 10)


def test_the_guard_resets_once_a_window_passes_under_the_threshold() -> None:
    window = Window()
    assert admit(window, T, NOW, URL, changes(30)).trip is not None
    assert window.tripped(NOW + 599, T)
    # Past a whole window the old buckets are gone, and the counts are under it.
    later = NOW + T.window + T.window / BUCKETS
    assert not window.tripped(later, T)
    after = checks(95) + changes(5)
    admitted = admit(window, T, later, URL, after)
    assert admitted.reset and admitted.held == frozenset() and window.tripped_at is None
    assert window.trips == 1


def test_a_storm_that_goes_on_keeps_the_guard_tripped_past_its_window() -> None:
    window = Window()
    admit(window, T, NOW, URL, changes(30))
    for minute in range(1, 12):
        more = changes(30)
        admitted = admit(window, T, NOW + 60 * minute, URL, more)
        assert held_of(admitted, more) == list(range(30)) and not admitted.reset
    assert window.trips == 1


def test_the_window_survives_its_json_document() -> None:
    window = Window()
    admit(window, T, NOW, URL, changes(30))
    copy = Window.from_json(window.to_json())
    assert copy.totals(T) == window.totals(T) and copy.tripped_at == window.tripped_at
    assert (copy.trips, copy.announced, copy.pending) == (1, 0, window.pending)


# --- the two stores, under concurrent writers -----------------------------------------


def concurrent_admits(windows: Windows, engine: Engine | None, base_url: str) -> list[Admission]:
    """Eight threads count 40 checks and 10 changes over 5 organizations each, at once."""
    results: list[Admission] = []
    start = threading.Barrier(8)

    def one() -> None:
        entries = checks(40) + changes(10)
        start.wait()
        if engine is None:
            results.append(windows.admit(None, base_url, T, entries))  # type: ignore[arg-type]
            return
        with engine.begin() as connection:
            results.append(windows.admit(connection, base_url, T, entries))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def assert_counted_once_each(results: list[Admission], window: Window) -> None:
    # 400 checks and 80 changes, 16 of each organization counted as 7: nothing lost.
    assert len(results) == 8
    assert window.totals(T) == Totals(400, 80, 5, 355, 35)
    assert all(r.held == frozenset() and r.trip is None for r in results)


def test_redis_windows_count_every_concurrent_batch(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    windows = RedisWindows(client, f"{NAMESPACE}-guard-{uuid.uuid4().hex[:8]}")
    base_url = f"https://{uuid.uuid4().hex[:8]}.example/"
    results = concurrent_admits(windows, None, base_url)
    assert_counted_once_each(results, windows.read(None)[base_url])  # type: ignore[arg-type]


def test_database_windows_count_every_concurrent_batch(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    windows = DatabaseWindows()
    base_url = f"https://{uuid.uuid4().hex[:8]}.example/"
    results = concurrent_admits(windows, engine, base_url)
    with engine.connect() as connection:
        assert_counted_once_each(results, windows.read(connection)[base_url])
        found = {s.base_url: s for s in states(windows, connection, T)}
    assert not found[base_url].tripped and found[base_url].changes == 35
    assert found[base_url].organizations == 5
    engine.dispose()


def test_redis_windows_count_a_redone_write_once_and_reuse_its_decisions(
    redis_url: str,
) -> None:
    """A batch admitted, its database write rolled back, then admitted again (a redo
    after a refused write or a lost connection): nothing is counted twice, each change
    gets the decision it had, and the trip decided the first time is claimed once."""
    windows = RedisWindows(redis.Redis.from_url(redis_url), f"guard-{uuid.uuid4().hex[:8]}")
    base_url = f"https://{uuid.uuid4().hex[:8]}.example/"
    batch = changes(21)
    first = windows.admit(None, base_url, T, batch)  # type: ignore[arg-type]
    redone = [windows.admit(None, base_url, T, [e]) for e in batch]  # type: ignore[arg-type]
    assert held_of(first, batch) == [19, 20] and first.trip is not None
    assert [i for i, a in enumerate(redone) if a.held] == [19, 20]
    assert all(a.trip == first.trip for a in redone)
    assert windows.read(None)[base_url].totals(T) == Totals(21, 21, 5, 21, 21)  # type: ignore[arg-type]
    assert windows.claim(None, first.trip) is True  # type: ignore[arg-type]
    assert windows.claim(None, first.trip) is False  # type: ignore[arg-type]
    again = windows.admit(None, base_url, T, batch[:1])  # type: ignore[arg-type]
    assert again.trip is None and again.held == frozenset()


def test_database_windows_forget_a_write_that_rolled_back(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    windows = DatabaseWindows()
    base_url = f"https://{uuid.uuid4().hex[:8]}.example/"
    batch = changes(21)
    with engine.connect() as connection, connection.begin() as transaction:
        assert windows.admit(connection, base_url, T, batch).trip is not None
        transaction.rollback()
    with engine.begin() as connection:
        redone = [windows.admit(connection, base_url, T, [e]) for e in batch]
    assert [i for i, a in enumerate(redone) if a.held] == [19, 20]
    trip = redone[19].trip
    assert trip is not None and trip.number == 1
    with engine.begin() as connection:
        assert windows.read(connection)[base_url].totals(T) == Totals(21, 21, 5, 21, 21)
        assert windows.claim(connection, trip) is True
    with engine.begin() as connection:
        assert windows.claim(connection, trip) is False
        # The session's database is shared: leave no tripped guard behind.
        connection.execute(delete(GuardWindow).where(GuardWindow.base_url == base_url))
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
    # two other organizations, so this team's organization is the third.
    windows = DatabaseWindows()
    guarded = replace(deps, guard=Guard(0.0, Thresholds(600.0, 0.2, 1), windows))
    installed = valid_team(guarded, install)
    base_url = fake.url
    with guarded.sessions.begin() as session:
        windows.admit(session.connection(), base_url, guarded.guard.thresholds, changes(2, 2, -2))
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
        gone.admit(None, URL, T, changes(1))  # type: ignore[arg-type]
    assert is_retried_database_error(counted.value)
    with pytest.raises(SharedStateUnavailable):
        gone.read(None)  # type: ignore[arg-type]

    with pytest.raises(ApiError) as refused:
        asyncio.run(off_loop(lambda: gone.read(None)))  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (503, "shared_state_unavailable")


def test_a_requests_attempts_count_both_checks_of_its_confirmation(
    confirming: Collaborators, install: Install, fake: FakeOpsgenie
) -> None:
    installed = valid_team(confirming, install)
    fake.set_key(installed.key, KeyScenario("invalid_key"))
    request_id = request_for(confirming, installed)
    assert isinstance(run_attempt(request_id, confirming), RetryLater)  # first check: 1 call
    # The second check meets a 503 before its answer: two more calls, and a retry of its
    # own (it is not charged with the first check's call).
    fake.set_key(installed.key, KeyScenario("server_error", times=1))
    retried = run_attempt(request_id, confirming)
    assert isinstance(retried, RetryLater) and not isinstance(retried.error, Confirming)
    fake.set_key(installed.key, KeyScenario("invalid_key"))
    second = run_attempt(request_id, confirming)
    assert isinstance(second, Finished) and second.result.outcome is Outcome.INVALID_KEY
    request, _ = load(confirming, request_id)
    assert (request.attempts, request.first_check_attempts) == (3, 1)
    view = get_request(confirming.sessions, request_id)
    assert view is not None and view.attempts == 3  # as the API shows it
