"""Issue 3's "no lost requests", on the single-request path web apps and the CLI use.

Requests published and then wiped from Redis before any worker consumed them, and
requests whose worker was SIGKILLed mid-request (the whole worker, and a pool
child): every one reaches a final outcome, and each team's history holds its
transition exactly once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import redis

from tests.support import chaos
from tests.support.redis_server import RedisServer
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.web.client import ValidationClient

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(180)]


def test_single_requests_survive_a_redis_flush_and_killed_workers(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> None:
    population = chaos.populate(postgres_url, fernet_key, chaos_fake, accounts=3, per_account=20)
    teams = sorted(population.expected)
    flushed, killed_worker, killed_child = teams[:20], teams[20:40], teams[40:]
    for team in killed_worker + killed_child:  # slow answers: the kill lands mid-request
        scenario = replace(population.scenarios[team], latency_ms=700)
        chaos_fake.set_key(population.keys[team], scenario)
    env = chaos.chaos_env(tmp_path, chaos_fake, postgres_url, fernet_key, chaos_redis.url())
    client = ValidationClient(chaos_redis.url(), postgres_url, queue=chaos.CHAOS_NAMESPACE)
    queue = redis.Redis.from_url(chaos_redis.url())

    def request(group: list[str]) -> None:
        for team in group:
            client.request(population.org, population.integrations[team], team)

    faults = chaos.Faults()
    try:
        with chaos.running_service(env, "single_requests") as service:
            service.start_beat()
            request(flushed)  # published; no worker is consuming yet
            assert queue.llen(chaos.CHAOS_NAMESPACE) == len(flushed)
            queue.flushdb()  # the test's own Redis server
            faults.note("redis_flush", requests=len(flushed))
            assert queue.llen(chaos.CHAOS_NAMESPACE) == 0

            worker = service.start_worker(concurrency=2, name="single")
            request(killed_worker)
            chaos.wait_for_running(postgres_url, population.org)
            worker.kill()
            faults.note("sigkill_worker")
            worker.start()

            request(killed_child)
            chaos.wait_for_running(postgres_url, population.org)
            faults.note("sigkill_pool_children", pids=chaos.kill_pool_children(worker))

            done_at = chaos.wait_for_finished(
                postgres_url, population.org, population.size, timeout=120
            )
    finally:
        client.close()
        queue.close()
    verdict = chaos.verify(postgres_url, population)
    figures = chaos.figures_of(verdict, faults, done_at, chaos_fake, population)
    figures["leaked_keys"] = chaos.leaked_keys(service.log_dir, population)
    chaos.record("single_requests", figures)
    assert figures["leaked_keys"] == 0
    chaos.assert_promises_kept(verdict)
