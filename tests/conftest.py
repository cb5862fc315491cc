"""Shared fixtures: a real fake Opsgenie, real databases, real brokers, real workers.

Redis and PostgreSQL are found at OGV_TEST_REDIS_URL and OGV_TEST_POSTGRES_URL
(defaults: this machine's loopback services). Without them a test is skipped on a
developer's machine and fails when CI is set: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from models.crypto import KeyVault
from models.db import dispose_all, session_factory
from models.migrate import upgrade
from worker.checks.pipeline import Collaborators
from worker.checks.retries import RetryPolicy
from worker.checks.rules import CheckOptions
from worker.checks.runtime import Runtime
from worker.platforms import PLATFORMS
from worker.settings import OFFICIAL_BASE_URLS, Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker

if TYPE_CHECKING:
    from tests.monitoring import Flower

REDIS_URL = os.environ.get("OGV_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
POSTGRES_URL = os.environ.get(
    "OGV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Test runs sharing this machine's Redis must not consume each other's messages.
# Derived from the pid, not drawn at random: `from tests.conftest import NAMESPACE`
# loads this file a second time, and both copies must agree.
NAMESPACE = os.environ.get("OGV_TEST_NAMESPACE") or f"ogv-test-{os.getpid()}"
ARTIFACTS = Path(os.environ.get("OGV_TEST_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))

# Short waits so retries finish in a test's time; the policy's shape is unchanged.
FAST_RETRIES = {
    "OGV_BACKOFF_BASE": "0.05",
    "OGV_BACKOFF_CAP": "0.2",
    "OGV_MAX_ATTEMPTS": "3",
    "OGV_THROTTLE_DEFAULT": "0.1",
    "OGV_TOTAL_TIMEOUT": "2",
    "OGV_CONNECT_TIMEOUT": "1",
}


def require(service: str, error: Exception | None) -> None:
    """Skip without the service on a laptop; fail in CI."""
    if error is None:
        return
    message = f"{service} is not reachable: {error}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (required when CI is set)", pytrace=False)
    pytest.skip(message)


def _probe(action: object) -> Exception | None:
    try:
        action()  # type: ignore[operator]
    except Exception as exc:
        return exc
    return None


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeOpsgenie]:
    """One fake Opsgenie for the session; tests use their own unique keys."""
    with FakeOpsgenie() as server:
        yield server


@pytest.fixture(scope="session")
def fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    require("Redis", _probe(client.ping))
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this session's own (tests/rabbitmq.py), deleted at the end."""
    from tests import rabbitmq

    require("RabbitMQ", rabbitmq.probe())
    with rabbitmq.session_vhost(NAMESPACE) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session, dropped at the end."""
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    require("PostgreSQL", _probe(lambda: psycopg.connect(dsn, connect_timeout=3).close()))
    name = f"ogv_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    dispose_all()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'ogv.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database: each test using it runs on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def settings(database_url: str, fernet_key: str, fake: FakeOpsgenie) -> Settings:
    """Settings for in-process code: the test database, the fake allowed, fast retries."""
    return Settings(
        database_url=database_url,
        broker_url="embedded",
        encryption_keys=[fernet_key],
        **{
            name.removeprefix("OGV_").lower(): value
            for name, value in {**FAST_RETRIES, **platform_env(fake)}.items()
        },
    )


@pytest.fixture
def deps(settings: Settings) -> Iterator[Collaborators]:
    """What the pipeline needs, on a real runtime (event loop thread, HTTP session)."""
    runtime = Runtime.start(settings)
    yield Collaborators(
        sessions=session_factory(settings.effective_database_url),
        client=runtime.client,
        gate=runtime.gate,
        vault=KeyVault(settings.fernet_keys()),
        policy=RetryPolicy.from_settings(settings),
        run=runtime.run,
        options=CheckOptions.from_settings(settings),
    )
    runtime.close()


@pytest.fixture
def ogv_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A clean OGV_* environment for in-process CLI calls; settings re-read after."""
    for name in list(os.environ):
        if name.startswith("OGV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OGV_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    env: dict[str, str] = {}
    yield env
    get_settings.cache_clear()


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


BROKERS = ["redis-postgres", "rabbitmq-postgres"]
"""The stacks on a real broker: a test parametrised over them runs on both brokers."""


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


@pytest.fixture(scope="module", params=["embedded", "redis-postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """A worker process on the embedded default, and on Redis with PostgreSQL."""
    running = open_stack(request.param, request, tmp_path_factory, fake)
    yield running
    running.stop()


# The monitoring tests' stack and Flower (tests/monitoring.py imports this module,
# so it is imported when a fixture runs, not at the top).


@pytest.fixture(scope="module")
def watched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """A Redis and PostgreSQL stack whose worker sends events and serves /metrics."""
    from tests.monitoring import watched_stack

    running = watched_stack(request, tmp_path_factory, fake)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def flower(watched: Stack) -> Iterator[Flower]:
    """`ogv flower` on the watched stack."""
    from tests.monitoring import running_flower

    with running_flower(watched) as running:
        yield running
