"""Checking held teams again: beat's `ogv.recheck_held`.

A change the mass-change guard holds (worker/checks/held.py) waits for an
operator, but the key may answer `valid` again before one comes: every
OGV_GUARD_RECHECK seconds each held team is checked again, and a check that finds
its key valid drops the held change (worker/checks/records.py). A change that is
confirmed again stays held while the guard is tripped, and is written once it
has reset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from models import Requester, utcnow
from worker.checks import held
from worker.checks.requests import Ask
from worker.enqueue import request_validations
from worker.periodic.dispatch import TeamRef, deal

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
    asked = check_again(sessions, app, asks, requested_by=Requester.BEAT, batch_size=batch_size)
    log.info("held.rechecked", extra={"teams": asked})
    return asked


def check_again(
    sessions: sessionmaker[Session],
    app: Celery,
    asks: Sequence[Ask],
    *,
    requested_by: Requester,
    batch_size: int,
) -> int:
    """Ask for a check of each team, as producers do (`request_validations`), in batches
    of at most `batch_size` that spread each account's teams apart; how many teams now
    have a check pending (a team with one open already keeps that one)."""
    refs = [TeamRef(a.team_id, a.organization_id, a.integration_id) for a in asks]
    asked = 0
    for batch in deal(refs, batch_size):
        submitted = request_validations(
            sessions,
            app,
            [Ask(ref.organization_id, ref.integration_id, ref.id) for ref in batch],
            requested_by=requested_by,
        )
        asked += len(submitted)
    return asked
