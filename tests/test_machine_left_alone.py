"""The test command leaves the machine's own Redis and RabbitMQ as it found them.

Runs after every other test (tests/support/sentinels.py orders it last): the key and
the queue written into the machine's services before the first test are still there,
with their data, and neither service was restarted. The chaos tests restart servers
of their own, never these.
"""

from __future__ import annotations

from tests.support.sentinels import MACHINE_RABBITMQ_URL, MACHINE_REDIS_URL, Sentinels
from tests.support.services import require


def test_the_machines_redis_kept_its_data_and_was_never_restarted(
    machine_sentinels: Sentinels,
) -> None:
    require(f"the machine's Redis ({MACHINE_REDIS_URL})", machine_sentinels.errors.get("Redis"))
    assert machine_sentinels.redis is not None
    assert machine_sentinels.redis.problems() == []


def test_the_machines_rabbitmq_kept_its_queue_and_was_never_restarted(
    machine_sentinels: Sentinels,
) -> None:
    require(
        f"the machine's RabbitMQ ({MACHINE_RABBITMQ_URL})", machine_sentinels.errors.get("RabbitMQ")
    )
    assert machine_sentinels.rabbitmq is not None
    assert machine_sentinels.rabbitmq.problems() == []
