"""Fixtures of the chaos suite: its own fake Opsgenie, and servers of its own to break.

A chaos test flushes, stops and restarts only what it started here: a `redis-server`
and a RabbitMQ node on private ports, in the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import Ground
from tests.support.rabbitmq import RabbitNode, node_missing
from tests.support.redis_server import RedisServer
from tests.support.services import probe, require
from worker.testing.fake_opsgenie import FakeOpsgenie


@pytest.fixture
def chaos_fake() -> Iterator[FakeOpsgenie]:
    """A fake Opsgenie of the test's own: a chaos scenario replaces every key."""
    with FakeOpsgenie() as server:
        yield server


@pytest.fixture
def chaos_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` of the test's own, empty, on a private port; stopped at the end."""
    server = RedisServer(tmp_path / "redis")
    require("redis-server", probe(server.start))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chaos_rabbitmq(tmp_path: Path) -> Iterator[RabbitNode]:
    """A RabbitMQ node of the test's own (private name and ports, no plugins)."""
    require("a RabbitMQ node of the tests' own", node_missing())
    node = RabbitNode(tmp_path / "rabbitmq")
    require("a RabbitMQ node of the tests' own", probe(node.start))
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def ground(
    postgres_url: str,
    fernet_key: str,
    chaos_fake: FakeOpsgenie,
    chaos_redis: RedisServer,
    tmp_path: Path,
) -> Ground:
    return Ground(postgres_url, fernet_key, chaos_fake, tmp_path, chaos_redis)
