"""Checking held teams again: beat's `ogv.recheck_held`.

A change the mass-change guard holds (worker/operations/held.py) waits for an
operator, but the key may answer `valid` again before one comes: every
OGV_GUARD_RECHECK seconds each held team is checked again, and a check that finds
its key valid drops the held change (worker/checks/records.py). A change that is
confirmed again stays held while the guard is tripped, and is written once it
has reset.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from models import Requester, utcnow
from worker.operations import held

log = logging.getLogger("ogv.recheck")

MAX_PER_RUN = 10_000
"""Held teams checked again per run at most; the rest are the next run's, oldest first."""


def recheck_held(
    sessions: sessionmaker[Session],
    app: Celery,
    every: float,
    batch_size: int,
    limit: int = MAX_PER_RUN,
) -> int:
    """Ask for a check of every held team not checked for `every` seconds; how many."""
    with sessions.begin() as session:
        asks = held.claim_rechecks(session, utcnow() - timedelta(seconds=every), limit)
    if not asks:
        return 0
    asked = held.check_again(
        sessions, app, asks, requested_by=Requester.BEAT, batch_size=batch_size
    )
    log.info("held.rechecked", extra={"teams": asked})
    return asked
