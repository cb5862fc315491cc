"""The canary task of `ogv health`: proof that a worker still consumes the checks' queue.

It travels the same queue as validations and does one thing: marks its
`health_checks` row seen, with the name of the worker that ran it.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task

from models.db import session_factory
from worker.celery import app
from worker.operations.health import CANARY_TASK, mark_seen


@app.task(name=CANARY_TASK, bind=True, ignore_result=True)
def canary(self: Task[Any, Any], check_id: str) -> None:
    """Mark health check `check_id` seen by this worker."""
    with session_factory().begin() as session:
        mark_seen(session, uuid.UUID(check_id), self.request.hostname or "(unnamed)")
