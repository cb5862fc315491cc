"""`ogv flower`: Flower on the configured broker, behind basic auth.

Flower shows every task the workers report (they send task events, and producers
send `task-sent`). It sees them through the broker's event exchange, which Redis
and RabbitMQ carry; the embedded SQLite broker does not deliver events or
broadcasts, so Flower needs `OGV_BROKER_URL` on Redis or RabbitMQ to show anything.

The credentials come from `OGV_FLOWER_BASIC_AUTH` (`user:password`, several
separated by commas) and reach Flower through its environment, never its argv,
which every user of the machine can read. Without credentials Flower is started
only when the caller says the run is local and insecure, and then it listens on
the loopback interface only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from celery import Celery

from worker.settings import Settings

LOOPBACK = "127.0.0.1"
FLOWER_AUTH_ENV = "FLOWER_BASIC_AUTH"
TASKS_COLUMNS = "name,uuid,state,args,received,runtime,worker"
"""Flower's default columns, and the args: a task's request id, to look up in the database."""


class FlowerRefused(RuntimeError):
    """Raised when Flower would start without authentication outside a local run."""

    code = "flower_without_auth"


@dataclass(frozen=True)
class FlowerPlan:
    """How Flower is started: its command-line options and its credentials."""

    argv: list[str]
    basic_auth: str | None = field(repr=False)  # never in a log or traceback
    sees_events: bool
    """False on the embedded broker, which carries no task events to Flower."""

    @property
    def authenticated(self) -> bool:
        return self.basic_auth is not None


def plan(settings: Settings, *, port: int, host: str, insecure_local: bool) -> FlowerPlan:
    """Decide how to start Flower, or refuse to start it without authentication."""
    auth = settings.flower_basic_auth
    if auth is None and not insecure_local:
        raise FlowerRefused(
            "OGV_FLOWER_BASIC_AUTH is not set: Flower would let anyone see and control the "
            "workers. Set it to user:password, or pass --insecure-local to listen on "
            f"{LOOPBACK} only without authentication."
        )
    if insecure_local and host not in (LOOPBACK, "localhost"):
        raise FlowerRefused(f"--insecure-local listens on {LOOPBACK} only, not on {host}")
    argv = [
        "flower",
        f"--port={port}",
        f"--address={LOOPBACK if insecure_local else host}",
        f"--tasks_columns={TASKS_COLUMNS}",
    ]
    secret = auth.get_secret_value() if auth is not None else None
    return FlowerPlan(argv, secret, sees_events=settings.uses_redis or settings.uses_rabbitmq)


def run(app: Celery, flower: FlowerPlan) -> None:
    """Run Flower in this process until it is stopped."""
    # Flower reads FLOWER_* variables itself (FLOWER_UNAUTHENTICATED_API would open
    # its control API): clear every inherited one, so only what is decided here counts.
    for name in [name for name in os.environ if name.startswith("FLOWER_")]:
        del os.environ[name]
    if flower.basic_auth is not None:
        os.environ[FLOWER_AUTH_ENV] = flower.basic_auth
    app.start(flower.argv)
