"""Shared fixtures, each built from tests/support: a real fake Opsgenie, real databases,
real brokers, real workers.

Every service the tests restart is one they started (tests/support/redis_server.py,
tests/support/rabbitmq.py); the machine's own Redis and RabbitMQ are left as found,
which tests/test_machine_left_alone.py checks at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from models.crypto import KeyVault
from models.db import session_factory
from models.migrate import upgrade
from tests.support import rabbitmq, services
from tests.support.cli import prepare_cli
from tests.support.monitoring import Flower, running_flower, watched_stack
from tests.support.pipeline import Install, installer
from tests.support.stacks import FAST_RETRIES, Stack, open_stack, platform_env
from worker.checks.pipeline import Collaborators
from worker.checks.retries import RetryPolicy
from worker.checks.rules import CheckOptions
from worker.checks.runtime import Runtime
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie

pytest_plugins = ["tests.support.sentinels"]


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeOpsgenie]:
    """One fake Opsgenie for the session; tests use their own unique keys."""
    with FakeOpsgenie() as server:
        yield server


@pytest.fixture(scope="session")
def fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The run's Redis: a server of its own, or OGV_TEST_REDIS_URL's (never flushed)."""
    with services.session_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this session's own, deleted at the end."""
    services.require("RabbitMQ", rabbitmq.probe())
    with rabbitmq.session_vhost(services.NAMESPACE) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session, dropped at the end."""
    with services.postgres_database() as url:
        yield url


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
def install(deps: Collaborators, settings: Settings, fake: FakeOpsgenie) -> Install:
    """Install a fresh account with one team whose key the fake answers as told."""
    return installer(deps, settings, fake)


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


@pytest.fixture
def cli_env(ogv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fake: FakeOpsgenie) -> None:
    """`ogv_env` with the fake allowed and the database migrated, for `support.cli.call`."""
    prepare_cli(monkeypatch, fake)


@pytest.fixture(scope="module", params=["embedded", "redis-postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """A worker process on the embedded default, and on Redis with PostgreSQL."""
    running = open_stack(request.param, request, tmp_path_factory, fake)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def watched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """A Redis and PostgreSQL stack whose worker sends events and serves /metrics."""
    running = watched_stack(request, tmp_path_factory, fake)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def flower(watched: Stack) -> Iterator[Flower]:
    """`ogv flower` on the watched stack."""
    with running_flower(watched) as running:
        yield running
