"""Chaos during a re-validation of 10,000 teams: every promise holds, and how fast it heals.

Each test starts two real prefork workers and a real beat (the outbox sweeper) on
Redis and PostgreSQL, starts a re-validation of 10,000 teams whose keys the fake
Opsgenie answers in a known way, breaks something while it runs, and then checks
(`chaos.verify`): every request final, each team's status its key's truth, the
history one unknown → truth row per team, no false invalidation, no duplicate.
The figures go to artifacts/chaos.json and docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support import chaos
from tests.support.chaos import (
    CONCURRENCY,
    FINISH_TIMEOUT,
    WORKERS,
    Faults,
    Ground,
    Population,
    Service,
    at_progress,
)

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(300)]

ACCOUNTS, PER_ACCOUNT = 200, 50  # 10,000 teams

Inject = Callable[[Service, Faults, Population], None]


def run_scenario(
    name: str, ground: Ground, inject: Inject, mix: chaos.Mix = chaos.truthful
) -> chaos.Verdict:
    """Populate, run a re-validation with `inject` breaking things, record, verify."""
    database_url = ground.database_url
    population = chaos.populate(
        database_url,
        ground.fernet_key,
        ground.fake,
        accounts=ACCOUNTS,
        per_account=PER_ACCOUNT,
        mix=mix,
    )
    env = chaos.chaos_env(
        ground.data_dir, ground.fake, database_url, ground.fernet_key, ground.redis.url()
    )
    with chaos.running_service(env, name) as service:
        for i in range(WORKERS):
            service.start_worker(concurrency=CONCURRENCY, name=f"{name}-{i}")
        service.start_beat()
        faults = Faults()
        run_id = chaos.start_run(env, population)
        assert chaos.wait_for_dispatch(database_url, run_id) == population.size
        inject(service, faults, population)
        done_at = chaos.wait_for_finished(
            database_url, population.org, population.size, FINISH_TIMEOUT
        )
    verdict = chaos.verify(database_url, population)
    figures = chaos.figures_of(verdict, faults, done_at, ground.fake, population)
    figures["leaked_keys"] = chaos.leaked_keys(service.log_dir, population)
    chaos.record(name, figures)
    assert figures["leaked_keys"] == 0
    return verdict


def test_workers_killed_with_sigkill_mid_run(ground: Ground) -> None:
    """Whole workers (main process and pool) and single pool children die mid-task."""

    def inject(service: Service, faults: Faults, population: Population) -> None:
        first, second = service.workers
        for round_, fraction in enumerate((0.1, 0.3, 0.5, 0.7)):
            at_progress(ground, population, fraction)
            if round_ % 2 == 0:
                pid = first.pid
                first.kill()
                faults.note("sigkill_worker", pid=pid)
                first.start()
            else:
                children = chaos.kill_pool_children(second)
                faults.note("sigkill_pool_children", pids=children)

    verdict = run_scenario("sigkill_workers", ground, inject)
    chaos.assert_promises_kept(verdict)


def test_redis_restarted_mid_run(ground: Ground) -> None:
    """Redis (no persistence) restarts: every queued and unacknowledged message is gone.

    The Redis restarted is the test's own (`chaos_redis`), on a private port."""

    def inject(service: Service, faults: Faults, population: Population) -> None:
        service.supervise(lambda worker: faults.note("worker_restarted_by_supervisor"))
        at_progress(ground, population, 0.3)
        ground.redis.restart()  # the test's own server, never the machine's
        faults.note("redis_restart")

    verdict = run_scenario("redis_restart", ground, inject)
    chaos.assert_promises_kept(verdict)


def test_postgres_connections_killed_mid_run(ground: Ground) -> None:
    """pg_terminate_backend on every connection to the database, twice."""

    def inject(service: Service, faults: Faults, population: Population) -> None:
        for fraction in (0.25, 0.6):
            at_progress(ground, population, fraction)
            killed = chaos.terminate_connections(ground.database_url)
            faults.note("pg_terminate_backend", connections=killed)

    verdict = run_scenario("postgres_connections_killed", ground, inject)
    chaos.assert_promises_kept(verdict)


def test_a_fault_storm_from_opsgenie(ground: Ground) -> None:
    """5xx, hangs past the timeout, bursts of 429 and connection resets, all at once."""

    def inject(service: Service, faults: Faults, population: Population) -> None:
        storm = sum(1 for s in population.scenarios.values() if s.behaviour != "valid")
        faults.note("opsgenie_storm", faulty_or_final_keys=storm)

    verdict = run_scenario("opsgenie_storm", ground, inject, mix=chaos.storm)
    chaos.assert_promises_kept(verdict)
    figures = json.loads(chaos.FIGURES.read_text())["opsgenie_storm"]["opsgenie"]
    calls = figures["calls"]
    # The storm really happened: about 30% of calls 5xx, and hangs, 429s and resets.
    assert figures["answered_5xx"] >= 0.2 * calls
    assert figures["hangs"] >= 0.04 * calls
    assert figures["answered_429"] >= 300 and figures["resets"] >= 300
