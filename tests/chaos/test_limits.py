"""Resource limits: a hang cannot hold a worker slot, a task cannot outlive its time
limit, and a multi-megabyte answer cannot blow up a worker's memory.

One prefork worker with a single slot, so a slot held too long shows at once: the
request queued behind it waits.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support import chaos
from tests.support.redis_server import RedisServer
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker
from worker.testing.scenario import KeyScenario
from worker.web.client import ValidationClient

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

SLACK = 2.5
"""Seconds of task, database and broker overhead allowed on top of a limit."""


def all_valid(rng: object, account: int) -> KeyScenario:
    return KeyScenario("valid")


def hang_then_good(
    postgres_url: str,
    fernet_key: str,
    fake: FakeOpsgenie,
    data_dir: Path,
    redis_url: str,
    name: str,
    **env: str,
) -> tuple[float, str | None, str | None, str]:
    """A hanging check, then a good one behind it on the only slot.

    Returns how long the good one took, the hanging one's outcome and error code,
    and the worker's log.
    """
    population = chaos.populate(
        postgres_url,
        fernet_key,
        fake,
        accounts=1,
        per_account=2,
        mix=all_valid,
        hang_seconds=60,
    )
    hung, good = sorted(population.expected)
    fake.set_key(population.keys[hung], replace(population.scenarios[hung], behaviour="hang"))
    service_env = chaos.chaos_env(data_dir, fake, postgres_url, fernet_key, redis_url, **env)
    client = ValidationClient(redis_url, postgres_url, queue=chaos.CHAOS_NAMESPACE)
    try:
        with chaos.running_service(service_env, name) as service:
            worker = service.start_worker(concurrency=1, name=name)
            started = time.monotonic()
            stuck = client.request(population.org, population.integrations[hung], hung)
            queued = client.request(population.org, population.integrations[good], good)
            answer = client.wait(queued.id, timeout=30)
            took = time.monotonic() - started
            assert answer is not None and answer.outcome == "valid", answer
            view = client.get(stuck.id)
            assert view is not None
            log = worker.log_path.read_text(errors="replace")
    finally:
        client.close()
    return took, view.outcome, view.error_code, log


def test_a_hang_holds_a_worker_slot_no_longer_than_the_client_timeout(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    took, outcome, code, _ = hang_then_good(
        postgres_url,
        fernet_key,
        chaos_fake,
        tmp_path,
        chaos_redis.url(),
        "hang-timeout",
        OGV_TOTAL_TIMEOUT="1",
        OGV_MAX_ATTEMPTS="1",
    )
    chaos.record("limits_hang", {"timeout_s": 1, "slot_free_after_s": round(took, 2)})
    assert (outcome, code) == ("error", "timeout")
    assert took < 1 + SLACK


def test_a_task_past_its_time_limit_is_stopped_and_its_slot_freed(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    """The client's timeout is longer than the task's limits: Celery's limits stop it."""
    took, outcome, _, log = hang_then_good(
        postgres_url,
        fernet_key,
        chaos_fake,
        tmp_path,
        chaos_redis.url(),
        "time-limit",
        OGV_TOTAL_TIMEOUT="30",
        OGV_TASK_SOFT_TIME_LIMIT="2",
        OGV_TASK_TIME_LIMIT="3",
        OGV_LEASE_SECONDS="4",
    )
    chaos.record(
        "limits_time_limit",
        {"soft_s": 2, "hard_s": 3, "slot_free_after_s": round(took, 2)},
    )
    assert "Soft time limit (2.0s) exceeded" in log or "Hard time limit (3.0s) exceeded" in log
    assert outcome is None  # still unanswered: the sweeper hands it on when its lease lapses
    assert took < 3 + SLACK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_multi_megabyte_answer_does_not_blow_up_a_worker(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    body = 32 * 1024 * 1024
    population = chaos.populate(
        postgres_url, fernet_key, chaos_fake, accounts=1, per_account=9, mix=all_valid
    )
    teams = sorted(population.expected)
    chaos_fake.set_scenario(replace(chaos_fake.scenario, large_body_bytes=body))
    for team in teams[1:]:
        large = replace(population.scenarios[team], behaviour="large_body")
        chaos_fake.set_key(population.keys[team], large)
    env = chaos.chaos_env(tmp_path, chaos_fake, postgres_url, fernet_key, chaos_redis.url())
    env["OGV_MAX_ATTEMPTS"] = "1"  # one answer read per check, as many as there are checks
    client = ValidationClient(chaos_redis.url(), postgres_url, queue=chaos.CHAOS_NAMESPACE)

    def check(team: str) -> tuple[str | None, str | None]:
        view = client.request_and_wait(
            population.org, population.integrations[team], team, timeout=60
        )
        return view.outcome, view.error_code

    try:
        with chaos.running_service(env, "large-body") as service:
            worker: LocalWorker = service.start_worker(concurrency=1, name="large-body")
            assert check(teams[0]) == ("valid", None)  # warm: runtime, session, pools
            [child] = worker.child_pids()
            before = rss_kib(child)
            outcomes = [check(team) for team in teams[1:]]
            assert worker.child_pids() == [child]  # the same process did every check
            growth = rss_kib(child) - before
    finally:
        client.close()
    chaos.record(
        "limits_large_body",
        {"body_bytes": body, "checks": len(teams) - 1, "rss_growth_kib": growth},
    )
    # Cut at OGV_MAX_RESPONSE_BYTES, the body is no longer the platform's JSON: no
    # verdict (every attempt read only the cap), and the team's status is kept.
    assert outcomes == [("error", "unrecognised_answer")] * (len(teams) - 1)
    assert growth < 8 * 1024  # far below one body (32 MiB): the answer was capped
