"""RabbitMQ as the broker, Redis for the shared state, several hosts (issue 15).

Real RabbitMQ (a virtual host of the session's own), real prefork workers, the fake
Opsgenie: the checks' queue is a durable quorum queue, a publish RabbitMQ refuses is
an error for the producer (publisher confirms), countdowns and retries finish on
quorum queues, two workers with distinct node names share one account's pacing
through OGV_REDIS_URL, and a worker without a shared Redis says that pacing is per
process.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from models import Requester
from tests.support import rabbitmq
from tests.support.monitoring import install_direct as install
from tests.support.services import ARTIFACTS, NAMESPACE
from tests.support.stacks import Stack, ok_json, open_stack
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.client import ValidationClient

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

ACCOUNT_RATE = 4


@pytest.fixture(scope="module")
def rabbit(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """RabbitMQ, PostgreSQL, Redis (OGV_REDIS_URL) and one prefork worker; batches of 2
    spread over a dispatch window, so a run is many countdowns on quorum queues."""
    stack = open_stack(
        "rabbitmq-postgres",
        request,
        tmp_path_factory,
        fake,
        OGV_ACCOUNT_RATE=str(ACCOUNT_RATE),
        OGV_BATCH_SIZE="2",
        OGV_DISPATCH_WINDOW="3",
    )
    yield stack
    stack.stop()


def host(stack: Stack, name: str, **env: str) -> Stack:
    """A stack on the same services, with its own worker log: another host."""
    log = ARTIFACTS / "logs" / f"worker-{name}-{uuid.uuid4().hex[:8]}.log"
    return Stack(name, {**stack.env, **env}, log)


def events(log: Path, name: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}' in line:
            found.append(json.loads(line))
    return [entry for entry in found if str(entry.get("event", "")).startswith(name)]


def test_the_checks_queue_is_a_durable_quorum_queue(rabbit: Stack) -> None:
    queues = rabbitmq.queue_types(NAMESPACE)
    assert queues[NAMESPACE] == ("quorum", True)
    # Native delayed delivery: countdowns wait in RabbitMQ, in 28 levels of quorum queues.
    delays = {name: kind for name, kind in queues.items() if name.startswith("celery_delayed_")}
    assert delays == {f"celery_delayed_{level}": ("quorum", True) for level in range(28)}


def test_a_publish_rabbitmq_refuses_is_an_error_and_the_request_stays_on_record(
    rabbit: Stack, fake: FakeOpsgenie
) -> None:
    """With publisher confirms, a message the broker nacks raises at the producer (and
    the committed row stays pending for the sweeper); without them it would vanish."""
    queue = f"{NAMESPACE}-refusing"
    rabbitmq.rabbitmqctl(
        "set_policy", "-p", NAMESPACE, "--apply-to", "queues", "refuse-all",
        f"^{queue}$", '{"max-length": 1, "overflow": "reject-publish"}',
    )  # fmt: skip
    account = install(rabbit, fake, {f"t{i}": KeyScenario("valid") for i in range(4)})
    client = ValidationClient(
        rabbit.env["OGV_BROKER_URL"],
        rabbit.env["OGV_DATABASE_URL"],
        queue=queue,
        requested_by=Requester.CLI,
    )
    refused: list[str] = []
    try:
        for team in account["teams"].values():
            try:
                client.request(account["org"], account["integration"], team)
            except OperationalError:
                refused.append(team)
        assert refused, "RabbitMQ accepted every message past the queue's limit"
        for team in refused:  # on record, pending: the outbox sweeper publishes it later
            view = client.request(account["org"], account["integration"], team)
            assert (view.team_id, view.state) == (team, "pending")
    finally:
        client.close()
        rabbitmq.rabbitmqctl("clear_policy", "-p", NAMESPACE, "refuse-all")


def test_countdowns_and_retries_finish_on_quorum_queues(rabbit: Stack, fake: FakeOpsgenie) -> None:
    """A run dealt into batches with countdowns over the window, each check failing
    once (a 5xx or a 429) before its answer: every retry is a countdown as well."""
    cases = {}
    for i in range(12):
        fault = (
            KeyScenario("server_error", times=1)
            if i % 2
            else KeyScenario("throttle", times=1, period_seconds=1)
        )
        cases[f"t{i:02d}"] = fault
    account = install(rabbit, fake, cases)
    started = time.monotonic()
    summary = ok_json(rabbit, "revalidate", "--org", str(account["org"]))
    assert summary["outcomes"] == {"valid": 12}
    assert summary["finished"] == summary["requests"] == 12
    assert {label: fake.calls(key) for label, key in account["keys"].items()} == dict.fromkeys(
        cases, 2
    )
    assert time.monotonic() - started < 90


def test_two_hosts_share_one_accounts_pacing_through_redis(
    rabbit: Stack, fake: FakeOpsgenie
) -> None:
    """Two workers with node names of their own (two hosts) and the same OGV_REDIS_URL:
    the fake's per-account counter never sees more than the account's rate."""
    rabbit.workers[0].stop()  # only the two hosts consume
    hosts = [host(rabbit, name) for name in ("host-a", "host-b")]
    try:
        for each in hosts:
            each.start_worker(pool="prefork", concurrency=2, name=each.name)
        bucket = f"paced-{uuid.uuid4().hex[:8]}"
        scenario = KeyScenario("valid", account=bucket)
        account = install(rabbit, fake, {f"t{i:02d}": scenario for i in range(16)})
        summary = ok_json(rabbit, "revalidate", "--org", str(account["org"]))
        assert summary["outcomes"] == {"valid": 16}
        assert fake.account_calls(bucket) == 16
        assert fake.max_calls_per_second(bucket) <= ACCOUNT_RATE
        ran = {each.name: len(events(each.worker_log, "validation.finished")) for each in hosts}
        assert sum(ran.values()) == 16 and all(ran.values()), ran  # both hosts took work
        for each in hosts:
            assert not events(each.worker_log, "coordination.pacing_per_process")
    finally:
        for each in hosts:
            each.stop()
        rabbit.workers[0].start()


def test_a_worker_without_shared_state_says_pacing_is_per_process(rabbit: Stack) -> None:
    """RabbitMQ and no OGV_REDIS_URL: a worker of two processes warns at once, and a
    second worker joining warns that it shares the broker with the first."""
    alone = host(rabbit, "per-process-a", OGV_REDIS_URL="")
    joining = host(rabbit, "per-process-b", OGV_REDIS_URL="")
    try:
        alone.start_worker(pool="prefork", concurrency=2, name=alone.name)
        [warning] = events(alone.worker_log, "coordination.pacing_per_process")
        assert warning["level"] == "WARNING" and warning["processes"] == 2
        assert "OGV_REDIS_URL" in str(warning["detail"])
        joining.start_worker(pool="prefork", concurrency=1, name=joining.name)
        deadline = time.monotonic() + 15
        while not events(joining.worker_log, "coordination.pacing_per_process"):
            assert time.monotonic() < deadline, joining.workers[0].log_tail()
            time.sleep(0.2)
        [joined] = events(joining.worker_log, "coordination.pacing_per_process")
        assert joined["other_workers"] >= 1 and "per-process-a" in str(joined["reason"])
    finally:
        alone.stop()
        joining.stop()


def test_health_says_where_the_shared_state_lives(rabbit: Stack) -> None:
    done = rabbit.ogv("health", "--json", "--timeout", "10")
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["checks"]["broker"]["message"].startswith("connected to amqp://")
    assert report["shared_state"] == {
        "shared": True,
        "source": "OGV_REDIS_URL",
        "url": rabbit.env["OGV_REDIS_URL"],
        "healthy": True,
        "message": f"shared by every worker in {rabbit.env['OGV_REDIS_URL']} (OGV_REDIS_URL)",
    }
    alone = subprocess.run(
        [*rabbit.ogv("--help").args[:1], "health", "--json", "--timeout", "3"],
        env={**rabbit.env, "OGV_REDIS_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    shared_state = json.loads(alone.stdout)["shared_state"]
    assert (shared_state["shared"], shared_state["url"]) == (False, None)
    assert shared_state["message"].startswith("per process")
