"""What a worker answers about itself: the canary of `ogv health`, and its keys.

The canary task travels the same queue as validations and does one thing: marks
its `health_checks` row seen, with the name of the worker that ran it (proof that
a worker still consumes the checks' queue).

The control command `KEYS_COMMAND` answers a broadcast from `ogv keys rotate`
with the fingerprints of the worker's encryption keys (never the keys).
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from celery.worker.control import inspect_command

from models.db import session_factory
from worker import key_holders
from worker.celery import app
from worker.operations.health import CANARY_TASK, mark_seen
from worker.settings import get_settings


@app.task(name=CANARY_TASK, bind=True, ignore_result=True)
def canary(self: Task[Any, Any], check_id: str) -> None:
    """Mark health check `check_id` seen by this worker."""
    with session_factory().begin() as session:
        mark_seen(session, uuid.UUID(check_id), self.request.hostname or "(unnamed)")


@inspect_command(name=key_holders.KEYS_COMMAND)
def key_fingerprints(state: Any) -> dict[str, Any]:
    """This worker's namespace and the fingerprints of its encryption keys."""
    return key_holders.worker_reply(get_settings())
