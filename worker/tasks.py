"""The Celery tasks: thin adapters from a message to `pipeline.run_attempt`.

Messages carry a validation request id and nothing else; the task re-reads the
rest. A transient failure becomes `self.retry(countdown=...)` with the delay the
retry policy chose; a lost database connection is retried with backoff as well.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from celery import Task

from models.crypto import KeyVault
from models.db import session_factory
from worker import outbox
from worker.celery import app
from worker.enqueue import SWEEP_TASK, VALIDATE_TASK, publish
from worker.pipeline import Collaborators, RetryLater, run_attempt
from worker.retries import RetryPolicy, is_retried_database_error
from worker.runtime import get_runtime
from worker.settings import get_settings

MAX_DATABASE_RETRIES = 10


def collaborators() -> Collaborators:
    settings = get_settings()
    runtime = get_runtime()
    return Collaborators(
        sessions=session_factory(),
        client=runtime.client,
        gate=runtime.gate,
        vault=KeyVault(settings.fernet_keys()),
        policy=RetryPolicy.from_settings(settings),
        run=runtime.run,
        lease=timedelta(seconds=settings.lease_seconds),
        max_wait=settings.max_inline_wait,
    )


@app.task(name=VALIDATE_TASK, bind=True, max_retries=None, ignore_result=True)
def validate_request(self: Task[Any, Any], request_id: str) -> None:
    """Check the key of the team named by validation request `request_id`."""
    deps = collaborators()
    try:
        step = run_attempt(uuid.UUID(request_id), deps)
    except Exception as exc:
        if not is_retried_database_error(exc):
            raise
        raise self.retry(
            countdown=deps.policy.backoff(self.request.retries + 1),
            max_retries=MAX_DATABASE_RETRIES,
            exc=exc,
        ) from exc
    if isinstance(step, RetryLater):
        raise self.retry(countdown=step.delay)


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_outbox() -> int:
    """Publish again every request stranded by a lost message or a dead worker."""
    settings = get_settings()
    return outbox.sweep(
        session_factory(),
        lambda request_id: publish(app, request_id),
        timedelta(seconds=settings.outbox_republish_after),
    )
