"""The whole pipeline through real processes: `ogv` commands, a real Celery worker,
the fake Opsgenie over HTTP, on the embedded default, on Redis with PostgreSQL, and on
RabbitMQ (quorum queue, countdowns by native delayed delivery) with PostgreSQL and
Redis for the shared state.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.services import NAMESPACE
from tests.support.stacks import BROKERS, Stack, install, ok_json, validate
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

# The core path on every broker: every outcome, each published by the CLI (retries and a
# 429's pause are countdowns: on RabbitMQ, native delayed delivery). The other tests here
# exercise the CLI more than the broker, and run on the embedded default and Redis alone.
every_broker = pytest.mark.parametrize(
    "stack", ["embedded", *BROKERS], indirect=True, scope="module"
)


MATRIX = {
    "valid": (KeyScenario("valid"), "valid", 1),
    "revoked": (KeyScenario("invalid_key"), "invalid_key", 1),
    "restricted": (KeyScenario("no_access"), "key_lacks_access", 1),
    "unprocessable": (KeyScenario("unprocessable"), "rejected", 1),
    "flaky": (KeyScenario("server_error", times=2), "valid", 3),
    "throttled": (KeyScenario("throttle", times=1, period_seconds=1), "valid", 2),
}


@every_broker
def test_every_outcome_through_a_real_worker(stack: Stack, fake: FakeOpsgenie) -> None:
    account = install(stack, fake, {label: case[0] for label, case in MATRIX.items()})
    org, integration = account["org"], account["integration"]
    jobs = {label: (org, integration, team) for label, team in account["teams"].items()}
    jobs["(missing team)"] = (org, integration, f"999999999-{uuid.uuid4()}")  # well formed, unknown
    jobs["(missing integration)"] = (org, integration + 100_000, "1-x")

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = dict(
            zip(jobs, pool.map(lambda job: validate(stack, *job), jobs.values()), strict=True)
        )

    expected = {label: (outcome, attempts) for label, (_, outcome, attempts) in MATRIX.items()}
    expected["(missing team)"] = ("invalid_team", 0)
    expected["(missing integration)"] = ("invalid_integration", 0)
    assert {label: (r["outcome"], r["attempts"]) for label, r in results.items()} == expected
    assert all(r["state"] == "done" for r in results.values())
    assert {label: fake.calls(key) for label, key in account["keys"].items()} == {
        label: attempts for label, (_, _, attempts) in MATRIX.items()
    }

    status = ok_json(stack, "status", "--org", str(org))["teams"]
    assert {row["label"]: row["status"] for row in status} == {
        label: outcome for label, (_, outcome, _) in MATRIX.items()
    }


def test_always_503_ends_in_error_and_keeps_the_earlier_status(
    stack: Stack, fake: FakeOpsgenie
) -> None:
    account = install(stack, fake, {"ops": KeyScenario("valid")})
    team = account["teams"]["ops"]
    assert validate(stack, account["org"], account["integration"], team)["outcome"] == "valid"
    fake.set_key(account["keys"]["ops"], KeyScenario("server_error", times=-1))

    result = validate(stack, account["org"], account["integration"], team)

    assert (result["state"], result["outcome"], result["attempts"]) == ("failed", "error", 3)
    assert (result["http_status"], result["error_code"]) == (503, "server_error")
    [row] = ok_json(stack, "status", "--org", str(account["org"]))["teams"]
    assert (row["status"], row["last_error_code"], row["last_http_status"]) == (
        "valid",
        "server_error",
        503,
    )


def test_wait_that_runs_out_exits_non_zero(stack: Stack, fake: FakeOpsgenie) -> None:
    account = install(stack, fake, {"slow": KeyScenario("valid", latency_ms=1500)})
    done = stack.ogv(
        "validate",
        "--org",
        str(account["org"]),
        "--integration",
        str(account["integration"]),
        "--team",
        account["teams"]["slow"],
        "--wait",
        "0.2",
        "--json",
    )
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "timeout"


def test_without_wait_the_request_id_comes_back_at_once(stack: Stack, fake: FakeOpsgenie) -> None:
    account = install(stack, fake, {"ops": KeyScenario("valid")})
    queued = ok_json(
        stack,
        "validate",
        "--org",
        str(account["org"]),
        "--integration",
        str(account["integration"]),
        "--team",
        account["teams"]["ops"],
    )
    assert uuid.UUID(queued["request_id"])


@pytest.mark.parametrize("probe", ["alerts"])
def test_alerts_probe_is_used_when_configured(stack: Stack, fake: FakeOpsgenie, probe: str) -> None:
    """OGV_PROBE switches the endpoint; a worker started with it calls GET v2/alerts."""
    env = dict(stack.env, OGV_PROBE=probe)
    alt = Stack(f"{stack.name}-{probe}", env, stack.worker_log)
    # A node name of its own: RabbitMQ gives each node's control queue to one worker.
    alt.start_worker(
        pool="threads", concurrency=2, name="ogv-alerts", extra_args=("--queues", NAMESPACE)
    )
    try:
        account = install(stack, fake, {"ops": KeyScenario("valid")})
        stack.workers[0].stop()  # only the alerts worker consumes now
        result = validate(alt, account["org"], account["integration"], account["teams"]["ops"])
        assert result["outcome"] == "valid"
        calls = [c for c in fake.requests() if c.key == account["keys"]["ops"]]
        assert [(c.method, c.path) for c in calls] == [("GET", "/v2/alerts")]
    finally:
        alt.stop()
        stack.workers[0].start()
