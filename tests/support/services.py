"""This test run's identity and the services it uses.

Each run has a namespace of its own (`NAMESPACE`): the workers' queue and the prefix of
their Redis keys, and the name of the run's RabbitMQ virtual host. Redis is a
`redis-server` the session starts for itself (tests/support/redis_server.py) unless
OGV_TEST_REDIS_URL names one to share; a shared database is never flushed, and only the
keys that carry the run's namespace are removed at the end. PostgreSQL gives each run a
database of its own, dropped at the end.

Without a service a test is skipped on a developer's machine and fails when CI is set:
CI must never pass by skipping.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from models.db import dispose_all
from models.migrate import upgrade
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = Path(os.environ.get("OGV_TEST_ARTIFACTS", ROOT / "artifacts"))

NAMESPACE = os.environ.get("OGV_TEST_NAMESPACE") or f"ogv-test-{os.getpid()}-{secrets.token_hex(3)}"
"""Test runs sharing a machine never consume each other's messages or touch each
other's keys: everything a run puts in a broker or in Redis is named by this."""

SHARED_REDIS_URL = os.environ.get("OGV_TEST_REDIS_URL")
"""A Redis to share instead of starting one; the run's keys are named by NAMESPACE."""
POSTGRES_URL = os.environ.get(
    "OGV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def require(service: str, error: Exception | None) -> None:
    """Skip without the service on a laptop; fail in CI."""
    if error is None:
        return
    message = f"{service} is not reachable: {error}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (required when CI is set)", pytrace=False)
    pytest.skip(message)


def probe(action: Callable[[], object]) -> Exception | None:
    """None when `action` runs; else what it raised."""
    try:
        action()
    except Exception as exc:
        return exc
    return None


def delete_namespace(client: redis.Redis, namespace: str = NAMESPACE) -> int:
    """Delete the keys whose names carry `namespace` (queues, bindings, pauses, windows),
    found with SCAN: nobody else's keys, and no FLUSHDB. Returns how many went."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{namespace}*", count=500):
        batch.append(key)
        if len(batch) == 500:
            deleted += int(client.delete(*batch))
            batch.clear()
    if batch:
        deleted += int(client.delete(*batch))
    return deleted


@contextmanager
def session_redis(directory: Path) -> Iterator[str]:
    """The run's Redis: a server of its own in `directory`, or OGV_TEST_REDIS_URL's."""
    if SHARED_REDIS_URL:
        client = redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=3)
        require("Redis", probe(client.ping))
        try:
            yield SHARED_REDIS_URL
        finally:
            delete_namespace(client)
            client.close()
        return
    missing = (
        None
        if shutil.which("redis-server")
        else FileNotFoundError(
            "no redis-server on PATH (Debian: apt-get install redis-server), "
            "and OGV_TEST_REDIS_URL names no Redis to share"
        )
    )
    require("Redis", missing)
    with RedisServer(directory) as server:
        yield server.url()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of the run's own, dropped at the end."""
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    require("PostgreSQL", probe(lambda: psycopg.connect(dsn, connect_timeout=3).close()))
    name = f"ogv_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_all()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
