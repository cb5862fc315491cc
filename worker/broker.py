"""What each kind of broker needs from Celery, for the workers and for every producer.

- **Redis**: a visibility timeout that outlasts the longest countdown (a message
  waiting out its countdown counts as unacknowledged meanwhile).
- **RabbitMQ**: the checks' queue is a durable *quorum* queue (replicated, and
  kept across a broker restart), bound to a topic exchange of the same name.
  Celery sees the quorum queue and turns global QoS off (`worker_detect_quorum_queues`),
  and it sends countdowns through RabbitMQ's native delayed delivery (the
  `celery_delayed_*` exchanges and queues the worker declares), so a message
  waiting out a countdown waits in RabbitMQ, not in a worker's memory. Every
  publish waits for the broker's confirm, so a message RabbitMQ refused or could
  not route is an error for whoever published it, never a silent loss.
- **The embedded broker** (SQLite) takes no options.

The producers (`worker.web.client.producer_app`) and the workers (`celeryconfig`)
read the same `Topology`, so they declare the queue identically: RabbitMQ refuses
a queue redeclared with other arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from celery import Celery
from kombu import Exchange, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

BrokerKind = Literal["redis", "rabbitmq", "embedded", "other"]

RABBITMQ_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
REDIS_SCHEMES = ("redis://", "rediss://")
EMBEDDED_SCHEME = "ogvsqla+"

SHORTEST_NATIVE_DELAY = 1.0
"""The shortest countdown RabbitMQ's native delayed delivery can carry: Celery counts
its delay in whole seconds, and refuses a countdown under one (ValueError)."""


def kind_of(broker_url: str) -> BrokerKind:
    """Which broker a URL names."""
    if broker_url.startswith(REDIS_SCHEMES):
        return "redis"
    if broker_url.startswith(RABBITMQ_SCHEMES):
        return "rabbitmq"
    if broker_url.startswith(EMBEDDED_SCHEME):
        return "embedded"
    return "other"


@dataclass(frozen=True)
class Topology:
    """The Celery settings that depend on the broker, for one queue."""

    transport_options: dict[str, Any] = field(default_factory=dict)
    queues: tuple[Queue, ...] | None = None
    """The declared queues; None lets Celery declare the default queue its own way."""
    exchange: str | None = None
    exchange_type: str = "direct"
    routing_key: str | None = None

    def celery_settings(self, queue: str) -> dict[str, Any]:
        """These options under Celery's names, for `app.conf.update`."""
        return {
            "broker_transport_options": self.transport_options,
            "task_queues": self.queues,
            "task_default_queue": queue,
            "task_default_exchange": self.exchange,
            "task_default_exchange_type": self.exchange_type,
            "task_default_routing_key": self.routing_key,
            # Global QoS is not available on quorum queues; Celery detects them and
            # uses a per-consumer prefetch instead.
            "worker_detect_quorum_queues": True,
            "broker_native_delayed_delivery_queue_type": "quorum",
        }


def topology(broker_url: str, queue: str, *, visibility_timeout: int | None = None) -> Topology:
    """What `broker_url`'s broker needs for the checks' queue `queue`."""
    broker = kind_of(broker_url)
    if broker == "rabbitmq":
        # Native delayed delivery routes a delayed message back by its routing key
        # through topic exchanges; a direct exchange would leave the countdown to
        # the worker's memory again.
        exchange = Exchange(queue, type="topic", durable=True)
        quorum = Queue(
            queue,
            exchange,
            routing_key=queue,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        return Topology(
            transport_options={"confirm_publish": True},
            queues=(quorum,),
            exchange=queue,
            exchange_type="topic",
            routing_key=queue,
        )
    if broker == "redis" and visibility_timeout is not None:
        return Topology(transport_options={"visibility_timeout": visibility_timeout})
    return Topology()


class ValidatorCelery(Celery):
    """Celery, with countdowns that every broker can carry.

    On RabbitMQ, Celery refuses a countdown between 0 and 1 second (native delayed
    delivery counts whole seconds). Retries and spread-out batches ask for such
    countdowns, so there they wait one second instead.
    """

    _delays_declared = False

    def send_task(  # type: ignore[override]
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        countdown: float | None = None,
        eta: Any = None,
        **options: Any,
    ) -> Any:
        if countdown and countdown > 0 and self._native_delays:
            countdown = max(countdown, SHORTEST_NATIVE_DELAY)
            self._declare_delays()
        return super().send_task(name, args, kwargs, countdown, eta, **options)

    @property
    def _native_delays(self) -> bool:
        return kind_of(str(self.conf.broker_url or "")) == "rabbitmq"

    def _declare_delays(self) -> None:
        """Declare the delayed-delivery exchanges and queues once per process: a worker
        declares them when it starts, but a producer may publish a countdown first
        (`ogv revalidate` before any worker ran), and RabbitMQ refuses a publish to an
        exchange that does not exist."""
        if self._delays_declared:
            return
        with self.connection_for_write() as connection:
            declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
            for queue in self.amqp.queues.values():
                queue(connection.default_channel).declare()  # its exchange, before binding it
                bind_queue_to_native_delayed_delivery_exchange(connection, queue)
        self._delays_declared = True
