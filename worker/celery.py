"""The Celery app. `celery -A worker worker` finds it here.

Worker hooks manage what lives as long as a process: the database pool is
dropped after fork, and the event loop and HTTP session are closed at shutdown.
The main process serves /metrics once the pool runs (worker/metrics.py).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import signals

from models.db import reset_after_fork
from worker import coordination, metrics
from worker.broker import ValidatorCelery, kind_of
from worker.checks.runtime import close_runtime
from worker.database import session_factory
from worker.logs import configure_logging
from worker.settings import Settings, get_settings

app = ValidatorCelery("opsgenie-validator", include=["worker.tasks", "worker.operations.canary"])
app.config_from_object("celeryconfig")

PEER_PING_SECONDS = 2.0
"""How long a starting worker waits for the others on its broker to answer its ping."""


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    reset_after_fork()
    _start_tracing()


@signals.worker_ready.connect
def _trace_in_place(sender: Any, **_: Any) -> None:
    # A threads or solo pool runs tasks in this process: no child will start it.
    if type(sender.pool).__module__ != "celery.concurrency.prefork":
        _start_tracing()


def _start_tracing() -> None:
    settings = get_settings()
    if settings.tracing_on:
        # Only when on: without it the service needs none of OpenTelemetry.
        from worker import tracing

        tracing.start(settings, "worker")


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    close_runtime()


@signals.worker_init.connect
def _before_pool(**_: Any) -> None:
    metrics.prepare_worker(get_settings())


@signals.worker_ready.connect
def _serve_metrics(sender: Any, **_: Any) -> None:
    metrics.serve(get_settings(), session_factory(), processes=_pool_processes(sender))


def _pool_processes(consumer: Any) -> int:
    """How many processes (or threads) the worker's pool runs."""
    return int(getattr(consumer.pool, "num_processes", None) or consumer.pool.limit or 1)


@signals.worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    metrics.shutdown()


@signals.worker_ready.connect
def _warn_if_pacing_is_per_process(sender: Any, **_: Any) -> None:
    settings = get_settings()
    if settings.shared_state_url is not None:
        return
    # Threads share their process's pacing; only separate processes split it.
    prefork = type(sender.pool).__module__ == "celery.concurrency.prefork"
    processes = sender.pool.num_processes if prefork else 1
    if coordination.warn_if_per_process(settings, processes=processes):
        return
    if kind_of(settings.effective_broker_url) != "embedded":  # it carries no broadcasts
        hostname = sender.hostname
        threading.Thread(
            target=_warn_if_others_consume, args=(settings, hostname), daemon=True
        ).start()


def _warn_if_others_consume(settings: Settings, hostname: str) -> None:
    """Ask the workers on this broker who they are: another one means pacing is split."""
    try:
        replies = app.control.ping(timeout=PEER_PING_SECONDS) or []
    except Exception:  # the warning is advice; a broker hiccup must not end a worker
        return
    others = {name for reply in replies for name in reply if name != hostname}
    coordination.warn_if_per_process(settings, processes=1, others=others)
