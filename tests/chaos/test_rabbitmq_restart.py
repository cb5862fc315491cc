"""The broker scenario on RabbitMQ: a restart of the whole node mid-run, and a SIGKILLed
worker, while two prefork workers re-validate a population (issue 15).

The service runs as production would on RabbitMQ: the checks' queue is a durable
quorum queue, countdowns wait in RabbitMQ's delayed-delivery queues, pacing and
pauses live in Redis (OGV_REDIS_URL). The RabbitMQ node is the test's own (a private
node name and ports, started for this test): it is stopped (`rabbitmqctl stop`) at
30% progress and started again; a worker is SIGKILLed and restarted at 60%. A
supervisor restarts any worker whose process exits, and counts it: the figure
`worker_restarted_by_supervisor` answers whether workers survive a RabbitMQ restart
without one.

CI runs 2,000 teams; `OGV_CHAOS_RABBITMQ_TEAMS=10000 pytest -m chaos -s
tests/chaos/test_rabbitmq_restart.py` runs the issue's 10,000 (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os

import pytest

from tests.support import chaos
from tests.support.chaos import (
    CONCURRENCY,
    FINISH_TIMEOUT,
    WORKERS,
    Faults,
    Ground,
    Service,
    at_progress,
)
from tests.support.rabbitmq import RabbitNode

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(400)]

TEAMS = int(os.environ.get("OGV_CHAOS_RABBITMQ_TEAMS", "2000"))
ACCOUNTS = 200


def test_rabbitmq_restarted_and_a_worker_killed_mid_run(
    ground: Ground, chaos_rabbitmq: RabbitNode
) -> None:
    population = chaos.populate(
        ground.database_url,
        ground.fernet_key,
        ground.fake,
        accounts=ACCOUNTS,
        per_account=max(1, TEAMS // ACCOUNTS),
    )
    env = chaos.chaos_env(
        ground.data_dir,
        ground.fake,
        ground.database_url,
        ground.fernet_key,
        ground.redis.url(),
        OGV_BROKER_URL=chaos_rabbitmq.url,
        OGV_REDIS_URL=ground.redis.url(),
    )
    name = "rabbitmq_restart" if population.size < 10_000 else "rabbitmq_restart_10k"

    def inject(service: Service, faults: Faults) -> None:
        service.supervise(lambda worker: faults.note("worker_restarted_by_supervisor"))
        at_progress(ground, population, 0.3)
        away = chaos_rabbitmq.restart()
        faults.note("rabbitmq_restart", seconds_down=round(away, 1))
        at_progress(ground, population, 0.6)
        first = service.workers[0]
        pid = first.pid
        if first.process is not None and first.process.poll() is None:
            first.kill()
            faults.note("sigkill_worker", pid=pid)
            first.start()

    with chaos.running_service(env, name) as service:
        for i in range(WORKERS):
            service.start_worker(concurrency=CONCURRENCY, name=f"{name}-{i}")
        service.start_beat()
        faults = Faults()
        run_id = chaos.start_run(env, population)
        assert chaos.wait_for_dispatch(ground.database_url, run_id) == population.size
        inject(service, faults)
        done_at = chaos.wait_for_finished(
            ground.database_url, population.org, population.size, FINISH_TIMEOUT
        )
    verdict = chaos.verify(ground.database_url, population)
    figures = chaos.figures_of(verdict, faults, done_at, ground.fake, population)
    figures["leaked_keys"] = chaos.leaked_keys(service.log_dir, population)
    chaos.record(name, figures)
    assert figures["leaked_keys"] == 0
    chaos.assert_promises_kept(verdict)
