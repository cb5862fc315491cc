"""Marks left in the machine's own Redis and RabbitMQ, to prove the tests leave them alone.

The test command must never stop, restart or flush a service it did not start. When a
collected test asks for `machine_sentinels` (tests/test_machine_left_alone.py), this
plugin, before the first test, writes a key into the machine's Redis (the database of
OGV_TEST_REDIS_URL, else 127.0.0.1:6379/0) and notes the server's run id, and puts a
message into a transient queue of the machine's RabbitMQ (OGV_TEST_RABBITMQ_URL's
virtual host): a restarted node loses a transient queue. That test runs last; the
marks are checked once more after every fixture's teardown, where a failure fails the
session, and then removed. A crashed run's marks expire within a day.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

import pytest
import redis
from kombu import Connection, Queue
from kombu.exceptions import OperationalError

from tests.support import rabbitmq

MACHINE_REDIS_URL = os.environ.get("OGV_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
MACHINE_RABBITMQ_URL = rabbitmq.RABBITMQ_URL
LIFETIME_SECONDS = 86_400
FIXTURE = "machine_sentinels"


@dataclass
class RedisMark:
    key: str
    value: str
    run_id: str

    def problems(self) -> list[str]:
        client = redis.Redis.from_url(MACHINE_REDIS_URL, socket_connect_timeout=3)
        try:
            run_id = client.info("server")["run_id"]
            value = client.get(self.key)
        except redis.RedisError as exc:
            return [f"the machine's Redis at {MACHINE_REDIS_URL} stopped answering: {exc}"]
        finally:
            client.close()
        found = []
        if run_id != self.run_id:
            found.append(f"the machine's Redis at {MACHINE_REDIS_URL} was restarted")
        if value != self.value.encode():
            found.append(f"the sentinel key {self.key} in {MACHINE_REDIS_URL} is gone or changed")
        return found

    def remove(self) -> None:
        client = redis.Redis.from_url(MACHINE_REDIS_URL, socket_connect_timeout=3)
        try:
            client.delete(self.key)
        except redis.RedisError:
            pass
        finally:
            client.close()


@dataclass
class RabbitMark:
    queue: str

    def _queue(self) -> Queue:
        return Queue(
            self.queue,
            routing_key=self.queue,
            durable=False,
            auto_delete=False,
            queue_arguments={"x-expires": LIFETIME_SECONDS * 1000},
        )

    def problems(self) -> list[str]:
        try:
            with Connection(MACHINE_RABBITMQ_URL, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1)
                channel = connection.channel()
                _, messages, _ = channel.queue_declare(self.queue, passive=True)
        except OperationalError as exc:
            return [f"the machine's RabbitMQ at {MACHINE_RABBITMQ_URL} stopped answering: {exc}"]
        except Exception as exc:  # amqp's NotFound when the queue is gone
            return [f"the sentinel queue {self.queue} is gone (RabbitMQ restarted?): {exc}"]
        if messages != 1:
            return [f"the sentinel queue {self.queue} holds {messages} messages, not 1"]
        return []

    def remove(self) -> None:
        try:
            with Connection(MACHINE_RABBITMQ_URL, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1)
                connection.channel().queue_delete(self.queue)
        except Exception:
            pass


@dataclass
class Sentinels:
    """What was planted, and why a mark could not be (a service not running)."""

    redis: RedisMark | None = None
    rabbitmq: RabbitMark | None = None
    errors: dict[str, Exception] = field(default_factory=dict)

    def problems(self) -> list[str]:
        marks = [mark for mark in (self.redis, self.rabbitmq) if mark is not None]
        return [problem for mark in marks for problem in mark.problems()]

    def remove(self) -> None:
        for mark in (self.redis, self.rabbitmq):
            if mark is not None:
                mark.remove()


def plant_redis() -> RedisMark:
    client = redis.Redis.from_url(MACHINE_REDIS_URL, socket_connect_timeout=3)
    try:
        mark = RedisMark(
            key=f"ogv-test-sentinel:{secrets.token_hex(8)}",
            value=secrets.token_hex(16),
            run_id=client.info("server")["run_id"],
        )
        client.set(mark.key, mark.value, ex=LIFETIME_SECONDS)
        return mark
    finally:
        client.close()


def plant_rabbitmq() -> RabbitMark:
    mark = RabbitMark(f"ogv-test-sentinel-{secrets.token_hex(8)}")
    with Connection(MACHINE_RABBITMQ_URL, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1)
        queue = mark._queue()
        producer = connection.Producer()
        producer.publish(
            secrets.token_hex(16),
            routing_key=mark.queue,
            declare=[queue],
            retry=False,
        )
    return mark


def plant() -> Sentinels:
    planted = Sentinels()
    try:
        planted.redis = plant_redis()
    except redis.RedisError as exc:
        planted.errors["Redis"] = exc
    try:
        planted.rabbitmq = plant_rabbitmq()
    except Exception as exc:
        planted.errors["RabbitMQ"] = exc
    return planted


PLANTED = pytest.StashKey[Sentinels]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The check of the sentinels runs after every other test (the chaos ones included)."""
    watching = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if watching:
        items[:] = [item for item in items if item not in watching] + watching


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(FIXTURE in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[PLANTED] = plant()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every fixture's teardown: the marks are still there, then removed."""
    planted = session.config.stash.get(PLANTED, None)
    if planted is None:
        return
    problems = planted.problems()
    planted.remove()
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("the tests disturbed the machine's services:", red=True)
            for problem in problems:
                reporter.write_line(f"  {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def machine_sentinels(request: pytest.FixtureRequest) -> Sentinels:
    """The marks planted before the first test (tests/test_machine_left_alone.py)."""
    planted = request.config.stash.get(PLANTED, None)
    assert planted is not None, "the sentinels are planted when this fixture is collected"
    return planted
