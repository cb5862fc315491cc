"""The Celery app. `celery -A worker worker` finds it here.

Worker hooks manage what lives as long as a process: the database pool is
dropped after fork, and the event loop and HTTP session are closed at shutdown.
The main process serves /metrics once the pool runs (worker/metrics.py).
"""

from __future__ import annotations

from typing import Any

from celery import signals

from models.db import reset_after_fork, session_factory
from worker import metrics
from worker.broker import ValidatorCelery
from worker.checks.runtime import close_runtime
from worker.logs import configure_logging
from worker.settings import get_settings

app = ValidatorCelery("opsgenie-validator", include=["worker.tasks", "worker.operations.canary"])
app.config_from_object("celeryconfig")


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    reset_after_fork()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    close_runtime()


@signals.worker_init.connect
def _before_pool(**_: Any) -> None:
    metrics.prepare_worker(get_settings())


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    metrics.serve(get_settings(), session_factory())


@signals.worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    metrics.shutdown()
