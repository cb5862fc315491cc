"""Where the state every worker shares lives: account pacing, pauses after a 429.

Opsgenie limits calls per account, whichever worker makes them (SPEC §5), so the
pacing and the pauses must be one for every worker process on every host. They
live in the Redis of `OGV_REDIS_URL`, or in the broker's when the broker is Redis
(`Settings.shared_state_url`). Without either (RabbitMQ or the embedded broker
alone) each worker *process* keeps its own: N processes may call one account N
times as fast as `OGV_ACCOUNT_RATE`, and a 429 pauses only the process that got
it. That is fine for one process; for more, a worker says so when it starts
(`warn_if_per_process`), and `ogv health` shows where the state lives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from kombu.utils.url import maybe_sanitize_url

from worker.settings import Settings

log = logging.getLogger("ogv.coordination")

PER_PROCESS_HINT = (
    "set OGV_REDIS_URL to a Redis every worker reaches, so that all of them share "
    "each account's pacing and the pauses after a 429"
)


@dataclass(frozen=True)
class SharedState:
    """Where pacing and pauses live, as `ogv health` reports it."""

    url: str | None
    """The Redis, its password masked; None when each process keeps its own."""
    source: str
    """`OGV_REDIS_URL`, `OGV_BROKER_URL`, or `per process`."""

    @property
    def shared(self) -> bool:
        return self.url is not None

    def describe(self) -> str:
        if self.url is None:
            return f"per process: no OGV_REDIS_URL and the broker is not Redis; {PER_PROCESS_HINT}"
        return f"shared by every worker in {self.url} ({self.source})"


def where(settings: Settings) -> SharedState:
    """Where this configuration keeps the state every worker shares."""
    if settings.redis_url:
        return SharedState(maybe_sanitize_url(settings.redis_url), "OGV_REDIS_URL")
    if settings.shared_state_url:
        return SharedState(maybe_sanitize_url(settings.shared_state_url), "OGV_BROKER_URL")
    return SharedState(None, "per process")


def ping(settings: Settings, timeout: float) -> str:
    """PING the shared state's Redis; raises when it does not answer."""
    url = settings.shared_state_url
    if url is None:
        return where(settings).describe()
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return where(settings).describe()


def warn_if_per_process(
    settings: Settings, *, processes: int, others: Iterable[str] = ()
) -> str | None:
    """Log a warning when pacing is per process and more than one process paces: this
    worker's pool runs several, or other workers consume from the same broker.
    Returns the reason given, or None when there is nothing to warn about."""
    if settings.shared_state_url is not None:
        return None
    peers = sorted(others)
    if peers:
        reason = f"{len(peers)} other worker(s) share this broker: {', '.join(peers[:5])}"
    elif processes > 1:
        reason = f"this worker runs {processes} pool processes"
    else:
        return None
    log.warning(
        "coordination.pacing_per_process",
        extra={
            "reason": reason,
            "processes": processes,
            "other_workers": len(peers),
            "detail": f"account pacing and 429 pauses are per process: {reason}; "
            + PER_PROCESS_HINT,
        },
    )
    return reason
