"""The retry policy: full-jitter backoff, throttle waits, and what counts as retryable."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from worker.checks.opsgenie import NetworkError, ServerError, Throttled
from worker.checks.retries import THROTTLE_JITTER, RetryPolicy, is_retried_database_error
from worker.settings import Settings

DRAWS = 2000
POLICY = RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_cap=3.0, throttle_default=2.0)


def test_backoff_is_full_jitter_under_a_ceiling_that_grows_then_caps() -> None:
    rng = random.Random(20240604)
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]  # base * 2**(attempt - 1), capped at 3

    for attempt, ceiling in enumerate(ceilings, start=1):
        draws = [POLICY.backoff(attempt, rng) for _ in range(DRAWS)]

        assert all(0 <= delay <= ceiling for delay in draws)
        # Full jitter: the draws spread over the whole interval, not just its top.
        assert min(draws) < 0.02 * ceiling
        assert max(draws) > 0.98 * ceiling
        assert 0.45 * ceiling < sum(draws) / DRAWS < 0.55 * ceiling


def test_backoff_before_the_first_attempt_uses_the_base() -> None:
    rng = random.Random(1)

    assert all(0 <= POLICY.backoff(0, rng) <= 0.5 for _ in range(DRAWS))


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [POLICY.backoff(3, random.Random(7)) for _ in range(3)]
    second = [POLICY.backoff(3, random.Random(7)) for _ in range(3)]

    assert first == second


@pytest.mark.parametrize(
    ("retry_after", "period"),
    [(3.0, 3.0), (60.0, 60.0), (None, POLICY.throttle_default)],
)
def test_a_throttle_waits_the_period_plus_a_little_jitter(
    retry_after: float | None, period: float
) -> None:
    error = Throttled("Opsgenie throttled the account", retry_after)

    delays = [POLICY.delay_for(error, attempt=1) for _ in range(DRAWS)]

    assert all(period <= delay <= period * (1 + THROTTLE_JITTER) for delay in delays)
    assert max(delays) - min(delays) > 0.2 * period * THROTTLE_JITTER
    assert THROTTLE_JITTER == 0.25


@pytest.mark.parametrize(
    "error",
    [ServerError("Opsgenie answered HTTP 503", 503), NetworkError("no answer", "timeout")],
)
def test_other_transient_errors_back_off(error: ServerError | NetworkError) -> None:
    delays = [POLICY.delay_for(error, attempt=3) for _ in range(DRAWS)]

    # Attempt 3's ceiling is 2.0: the draws use all of it, and nothing above it.
    assert all(0 <= delay <= 2.0 for delay in delays)
    assert max(delays) > 1.9
    # Not the throttle default, which would put every delay in [2.0, 2.5].
    assert min(delays) < 0.1


def test_exhausted_after_max_attempts() -> None:
    assert [POLICY.exhausted(n) for n in range(6)] == [False, False, False, False, True, True]


def test_from_settings() -> None:
    settings = Settings(max_attempts=9, backoff_base=0.25, backoff_cap=8, throttle_default=1.5)

    assert RetryPolicy.from_settings(settings) == RetryPolicy(9, 0.25, 8.0, 1.5)


def _operational_error(tmp_path: Path) -> OperationalError:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite3'}")
    try:
        with pytest.raises(OperationalError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    return caught.value


def _integrity_error() -> IntegrityError:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    try:
        with engine.begin() as conn:
            table.create(conn)
            conn.execute(insert(table).values(id=1))
            with pytest.raises(IntegrityError) as caught:
                conn.execute(insert(table).values(id=1))
    finally:
        engine.dispose()
    return caught.value


def test_a_lost_database_is_retried_a_constraint_violation_is_not(tmp_path: Path) -> None:
    assert is_retried_database_error(_operational_error(tmp_path))
    assert not is_retried_database_error(_integrity_error())
    assert not is_retried_database_error(ValueError("not a database error"))


def test_an_invalidated_connection_is_retried_whatever_its_class() -> None:
    error = IntegrityError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)

    assert is_retried_database_error(error)
