"""A running service for end-to-end tests: its environment, worker processes, and the
real `ogv` command line against it; and installing accounts through that command line.

A stack of kind "embedded" runs on the SQLite default; "redis-postgres" on Redis and
PostgreSQL; "rabbitmq-postgres" on RabbitMQ (Redis for the shared state). Its queue
and Redis keys are named by the run's namespace (tests/support/services.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import ARTIFACTS, NAMESPACE
from worker.platforms import PLATFORMS
from worker.settings import OFFICIAL_BASE_URLS
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker
from worker.testing.scenario import KeyScenario

# Short waits so retries finish in a test's time; the policy's shape is unchanged.
FAST_RETRIES = {
    "OGV_BACKOFF_BASE": "0.05",
    "OGV_BACKOFF_CAP": "0.2",
    "OGV_MAX_ATTEMPTS": "3",
    "OGV_THROTTLE_DEFAULT": "0.1",
    "OGV_TOTAL_TIMEOUT": "2",
    "OGV_CONNECT_TIMEOUT": "1",
}

BROKERS = ["redis-postgres", "rabbitmq-postgres"]
"""The stacks on a real broker: a test parametrised over them runs on both brokers."""


def ogv_command() -> list[str]:
    script = Path(sys.executable).with_name("ogv")
    return [str(script)] if script.exists() else [shutil.which("ogv") or "ogv"]


@dataclass
class Stack:
    """A running service: its environment, and a real worker process on it."""

    name: str
    env: dict[str, str]
    worker_log: Path
    workers: list[LocalWorker] = field(default_factory=list)

    def ogv(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `ogv` command line against this stack."""
        return subprocess.run(
            [*ogv_command(), *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_worker(self, **kwargs: object) -> LocalWorker:
        worker = LocalWorker(self.env, self.worker_log, **kwargs).start()  # type: ignore[arg-type]
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    @property
    def database_url(self) -> str:
        """The stack's database: PostgreSQL's URL, or the embedded SQLite file."""
        return self.env.get(
            "OGV_DATABASE_URL", f"sqlite:///{Path(self.env['OGV_DATA_DIR']) / 'ogv.sqlite3'}"
        )


def platform_env(fake: FakeOpsgenie) -> dict[str, str]:
    """The fake stands for every platform: Opsgenie US at its root, EU and JSM Ops under
    their prefixes, all allowed. Looking keys up elsewhere is off unless a test wants it."""
    return {
        "OGV_OPSGENIE_BASE_URL": fake.url,
        "OGV_OPSGENIE_EU_BASE_URL": fake.base_url_for("opsgenie-eu"),
        "OGV_JSM_OPS_BASE_URL": fake.base_url_for("jsm-ops"),
        "OGV_ALLOWED_BASE_URLS": ",".join(
            [*OFFICIAL_BASE_URLS, *(fake.base_url_for(name) for name in PLATFORMS)]
        ),
        "OGV_LOCATE_KEYS": "off",
    }


def service_env(data_dir: Path, fake: FakeOpsgenie, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env.update(FAST_RETRIES)
    env["OGV_METRICS_PORT"] = "0"  # no fixed port per worker; tests that scrape pick one
    env["OGV_API_METRICS_PORT"] = "0"  # nor per API
    # One answer decides, as before confirmation: the tests of confirmation ask for it.
    env["OGV_CONFIRM_AFTER"] = "0"
    env.update(
        OGV_DATA_DIR=str(data_dir),
        OGV_NAMESPACE=NAMESPACE,
        OGV_LOG_FORMAT="json",
        **platform_env(fake),
    )
    env.update(extra)
    return env


def broker_env(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The broker (and shared state) of a stack of `kind`."""
    redis_url = str(request.getfixturevalue("redis_url"))
    if kind == "rabbitmq-postgres":
        return {
            "OGV_BROKER_URL": str(request.getfixturevalue("rabbitmq_url")),
            "OGV_REDIS_URL": redis_url,
        }
    return {"OGV_BROKER_URL": redis_url}


def open_stack(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    **extra_env: str,
) -> Stack:
    """A migrated service of `kind` with one worker: "embedded", "redis-postgres", or
    "rabbitmq-postgres" (RabbitMQ the broker, Redis the shared state: OGV_REDIS_URL)."""
    data_dir = tmp_path_factory.mktemp(f"stack-{kind}")
    log = ARTIFACTS / "logs" / f"worker-{kind}-{uuid.uuid4().hex[:8]}.log"
    if kind == "embedded":
        env = service_env(data_dir, fake, **extra_env)
        pool: dict[str, object] = {"pool": "threads", "concurrency": 4}
    else:
        env = service_env(
            data_dir,
            fake,
            OGV_DATABASE_URL=request.getfixturevalue("postgres_url"),
            OGV_ENCRYPTION_KEYS=request.getfixturevalue("fernet_key"),
            **broker_env(kind, request),
            **extra_env,
        )
        pool = {"pool": "prefork", "concurrency": 2}
    running = Stack(kind, env, log)
    upgraded = running.ogv("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    running.start_worker(**pool)
    return running


# -- through the command line ----------------------------------------------------------


def ok_json(stack: Stack, *args: str, stdin: str | None = None) -> Any:
    """`ogv ARGS --json` on the stack, which must succeed; its JSON answer."""
    done = stack.ogv(*args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def install(stack: Stack, fake: FakeOpsgenie, cases: dict[str, KeyScenario]) -> dict[str, Any]:
    """An account installed through the CLI, with one team per case."""
    org = uuid.uuid4().int % 10**9 + 1
    added = ok_json(
        stack,
        "integration",
        "add",
        "--org",
        str(org),
        "--account",
        f"acct-{org}",
        "--base-url",
        fake.url,
    )
    teams, keys = {}, {}
    for label, scenario in cases.items():
        keys[label] = f"key-{uuid.uuid4()}"
        fake.set_key(keys[label], scenario)
        team = ok_json(
            stack,
            "team",
            "add",
            "--org",
            str(org),
            "--integration",
            str(added["integration_id"]),
            "--label",
            label,
            stdin=keys[label] + "\n",
        )
        teams[label] = team["team_id"]
    return {"org": org, "integration": added["integration_id"], "teams": teams, "keys": keys}


def validate(stack: Stack, org: int, integration: int, team: str, wait: float = 30) -> Any:
    """`ogv validate --wait` of one team on the stack."""
    return ok_json(
        stack,
        "validate",
        "--org",
        str(org),
        "--integration",
        str(integration),
        "--team",
        team,
        "--wait",
        str(wait),
    )


def wait_until(predicate: Callable[[], object], timeout: float = 20) -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def events(log: str, name: str) -> list[dict[str, Any]]:
    """Every `name` event of a JSON log; each must be a whole line of JSON."""
    found = []
    for line in log.splitlines():
        if f'"{name}"' in line:
            record = json.loads(line)  # fails the test if the line is not one JSON object
            if record.get("event") == name:
                found.append(record)
    return found
