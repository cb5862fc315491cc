"""Fixtures of the chaos suite: its own fake Opsgenie and its own Redis database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.chaos.harness import CHAOS_REDIS_URL, ensure_redis, flush_chaos_redis
from tests.conftest import require
from worker.testing.fake_opsgenie import FakeOpsgenie


@pytest.fixture
def chaos_fake() -> Iterator[FakeOpsgenie]:
    """A fake Opsgenie of the test's own: a chaos scenario replaces every key."""
    with FakeOpsgenie() as server:
        yield server


@pytest.fixture
def chaos_redis() -> Iterator[str]:
    """The chaos suite's Redis database, empty; Redis is running again afterwards."""
    client = redis.Redis.from_url(CHAOS_REDIS_URL)
    try:
        error = None
        client.ping()
    except redis.RedisError as exc:
        error = exc
    finally:
        client.close()
    require("Redis", error)
    flush_chaos_redis()
    yield CHAOS_REDIS_URL
    ensure_redis()
    flush_chaos_redis()
