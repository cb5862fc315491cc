"""The chaos checks catch a broken promise: the same verdict, on a deliberately broken worker.

Each test runs a small version of a chaos scenario twice over: on the real worker
the promises hold; on a mutant (tests/chaos/mutants.py) `chaos.verify` must
report the broken one. A check that passes whatever the code does proves nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.support import chaos
from tests.support.redis_server import RedisServer
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

MUTANT_APP = "tests.chaos.mutants"


def slow_valid(rng: object, account: int) -> KeyScenario:
    return KeyScenario("valid", latency_ms=700)


def flaky_503(rng: object, account: int) -> KeyScenario:
    return KeyScenario("server_error", times=1, status=503)


def children_killed_mid_batch(
    postgres_url: str,
    fernet_key: str,
    fake: FakeOpsgenie,
    data_dir: Path,
    redis_url: str,
    mutation: str = "",
) -> chaos.Verdict:
    """300 teams in 3 batches; both pool children SIGKILLed while they run a batch.

    No beat runs: the sweeper would heal a lost message after the lease, and this
    check is about the first line of defence, the message coming back at once.
    """
    population = chaos.populate(
        postgres_url, fernet_key, fake, accounts=3, per_account=100, mix=slow_valid
    )
    env = chaos.chaos_env(
        data_dir, fake, postgres_url, fernet_key, redis_url, OGV_CHAOS_MUTATION=mutation
    )
    app = MUTANT_APP if mutation else "worker"
    with chaos.running_service(env, f"children-killed-{mutation or 'real'}", app) as service:
        worker = service.start_worker(concurrency=2, name="acks")
        chaos.start_run(env, population)
        chaos.wait_for_running(postgres_url, population.org)
        chaos.kill_pool_children(worker)
        with contextlib.suppress(TimeoutError):  # the verdict says what is missing
            chaos.wait_for_finished(postgres_url, population.org, population.size, 12)
    return chaos.verify(postgres_url, population)


def storm_of_503(
    postgres_url: str,
    fernet_key: str,
    fake: FakeOpsgenie,
    data_dir: Path,
    redis_url: str,
    mutation: str = "",
) -> chaos.Verdict:
    """300 good keys whose first answer is a 503."""
    population = chaos.populate(
        postgres_url, fernet_key, fake, accounts=3, per_account=100, mix=flaky_503
    )
    env = chaos.chaos_env(
        data_dir, fake, postgres_url, fernet_key, redis_url, OGV_CHAOS_MUTATION=mutation
    )
    app = MUTANT_APP if mutation else "worker"
    with chaos.running_service(env, f"storm-503-{mutation or 'real'}", app) as service:
        service.start_worker(concurrency=2, name="classify")
        chaos.start_run(env, population)
        chaos.wait_for_finished(postgres_url, population.org, population.size, 30)
    return chaos.verify(postgres_url, population)


def test_a_task_whose_process_died_is_delivered_again(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    verdict = children_killed_mid_batch(
        postgres_url, fernet_key, chaos_fake, tmp_path, chaos_redis.url()
    )
    chaos.assert_promises_kept(verdict)


def test_early_acks_are_caught(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    verdict = children_killed_mid_batch(
        postgres_url, fernet_key, chaos_fake, tmp_path, chaos_redis.url(), mutation="early_acks"
    )
    assert verdict.not_final > 0 and verdict.lost > 0, verdict.problems()
    with pytest.raises(AssertionError, match="lost"):
        chaos.assert_promises_kept(verdict)


def test_503_taken_as_invalid_key_is_caught(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    real = storm_of_503(postgres_url, fernet_key, chaos_fake, tmp_path, chaos_redis.url())
    chaos.assert_promises_kept(real)
    mutant = storm_of_503(
        postgres_url,
        fernet_key,
        chaos_fake,
        tmp_path,
        chaos_redis.url(),
        mutation="503_is_invalid_key",
    )
    assert mutant.false_invalidations == mutant.teams, mutant.problems()
    with pytest.raises(AssertionError, match="false invalidations"):
        chaos.assert_promises_kept(mutant)
