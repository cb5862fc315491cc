"""`ogv health` through real processes: healthy with a consuming worker, and a clear,
non-zero answer naming the broken part when the worker is stopped or a service is down.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from models import HealthCheck
from tests.support.stacks import Stack, ogv_command, service_env
from worker.testing.fake_opsgenie import FakeOpsgenie

UNHEALTHY = 3


def health(env: dict[str, str], *args: str) -> tuple[int, Any]:
    done = subprocess.run(
        [*ogv_command(), "health", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def health_rows(stack: Stack) -> int:
    engine = create_engine(stack.database_url)
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(HealthCheck)) or 0
    engine.dispose()
    return count


def test_healthy_when_a_worker_consumes(stack: Stack) -> None:
    code, report = health(stack.env, "--timeout", "20")

    assert code == 0, report
    assert report["healthy"] is True
    assert {name: check["healthy"] for name, check in report["checks"].items()} == {
        "database": True,
        "broker": True,
        "worker": True,
    }
    assert report["checks"]["worker"]["message"].startswith("worker ogv-")
    assert "error" not in report
    assert health_rows(stack) == 0  # the canary's row is removed again


@pytest.mark.parametrize("stack", ["redis-postgres"], indirect=True)
def test_a_stopped_worker_is_reported_clearly(stack: Stack) -> None:
    stack.workers[0].kill()  # gone at once; a warm shutdown only takes longer
    try:
        started = time.monotonic()
        code, report = health(stack.env, "--timeout", "2")
        elapsed = time.monotonic() - started
    finally:
        stack.workers[0].start()

    assert code == UNHEALTHY
    assert report["healthy"] is False
    checks = report["checks"]
    assert (checks["database"]["healthy"], checks["broker"]["healthy"]) == (True, True)
    assert checks["worker"]["healthy"] is False
    assert "no worker ran a canary task" in checks["worker"]["message"]
    assert report["error"] == {
        "code": "unhealthy",
        "message": f"worker: {checks['worker']['message']}",
    }
    assert elapsed < 15
    # The canary expired unrun; the restarted worker still consumes.
    assert health(stack.env, "--timeout", "20")[0] == 0


def test_unreachable_database_and_broker_are_named(
    tmp_path: Path, fake: FakeOpsgenie, fernet_key: str
) -> None:
    env = service_env(
        tmp_path,
        fake,
        OGV_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none",
        OGV_BROKER_URL="redis://127.0.0.1:1/0",
        OGV_ENCRYPTION_KEYS=fernet_key,
    )
    code, report = health(env, "--timeout", "5")

    assert code == UNHEALTHY
    checks = report["checks"]
    assert {name: check["healthy"] for name, check in checks.items()} == {
        "database": False,
        "broker": False,
        "worker": False,
    }
    assert "Connection refused" in checks["database"]["message"]
    assert "Connection refused" in checks["broker"]["message"]
    assert checks["worker"]["message"] == "not checked: the database and broker must work"
    assert report["error"]["message"].startswith("database: ")


@pytest.mark.parametrize("stack", ["redis-postgres"], indirect=True)
def test_a_tripped_guard_is_named_and_exits_non_zero(stack: Stack) -> None:
    """Changes are being held: the operator must decide, so health says so and fails."""
    import uuid

    import redis

    from models import GuardWindow
    from tests.support.services import NAMESPACE
    from worker.checks.guard import DatabaseWindows, RedisWindows, Thresholds, Windows

    base_url = f"http://tripped-{uuid.uuid4().hex[:8]}.test/"
    shared = stack.env.get("OGV_BROKER_URL", "")
    client = redis.Redis.from_url(shared) if shared.startswith("redis") else None
    windows: Windows = RedisWindows(client, NAMESPACE) if client else DatabaseWindows()
    engine = create_engine(stack.database_url)
    with engine.begin() as connection:
        admitted = windows.admit(
            connection, base_url, Thresholds(min_changes=3), 3, ["a", "b", "c"]
        )
    try:
        assert admitted.trip is not None
        code, report = health(stack.env, "--timeout", "20")
    finally:
        if client is not None:
            client.delete(f"{NAMESPACE}:guard:{base_url}")
            client.srem(f"{NAMESPACE}:guard:urls", base_url)
        with engine.begin() as connection:
            connection.execute(GuardWindow.__table__.delete())
        engine.dispose()

    assert code == UNHEALTHY, report
    assert all(check["healthy"] for check in report["checks"].values())
    assert report["guard"]["tripped"] == [
        {"base_url": base_url, "since": admitted.trip.at.isoformat(), "held": 0}
    ]
    assert report["error"]["message"].startswith(f"guard: tripped for {base_url} since ")
