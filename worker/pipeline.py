"""One attempt at one validation request, from its id to its written outcome.

`run_attempt()` is what the Celery task calls; it takes every collaborator as a
parameter, so tests drive it with a real database and a real fake Opsgenie and no
Celery at all. Database work happens in short transactions on either side of the
HTTP call; no transaction is held open while Opsgenie is asked.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from models import Outcome, utcnow
from models.crypto import KeyVault, UndecryptableKey
from worker import records
from worker.opsgenie import AccountPaused, OpsgenieClient, TransientError
from worker.ratelimit import AccountGate
from worker.retries import RetryPolicy
from worker.rules import Result, Target, give_up, probe, resolve

log = logging.getLogger("ogv.pipeline")

T = TypeVar("T")


@dataclass(frozen=True)
class Finished:
    """The request reached its final outcome in this attempt."""

    result: Result


@dataclass(frozen=True)
class RetryLater:
    """A transient failure: run the request again after `delay` seconds."""

    delay: float
    error: TransientError


@dataclass(frozen=True)
class AlreadyFinal:
    """The request was finished before (a duplicate delivery); nothing was done."""


Step = Finished | RetryLater | AlreadyFinal


@dataclass(frozen=True)
class Collaborators:
    """What an attempt needs besides the request id."""

    sessions: sessionmaker[Session]
    client: OpsgenieClient
    gate: AccountGate
    vault: KeyVault
    policy: RetryPolicy
    run: Callable[[Coroutine[Any, Any, Result]], Result]
    lease: timedelta = timedelta(minutes=5)
    """How long a worker holds a running request before the sweeper may hand it on."""


def run_attempt(request_id: uuid.UUID, deps: Collaborators) -> Step:
    """Run one attempt of the request and say what should happen next."""
    with deps.sessions.begin() as session:
        request = records.start_attempt(session, request_id, deps.lease)
        if request is None:
            return AlreadyFinal()
        attempts = request.attempts
        found = _resolve(session, request, deps.vault)

    started, clock = utcnow(), time.monotonic()
    target = found if isinstance(found, Target) else None
    if target is None:
        assert isinstance(found, Result)
        result = found
    else:
        try:
            attempts += 1
            result = deps.run(probe(target, deps.client, deps.gate))
        except AccountPaused as exc:
            # Opsgenie was not called: wait out the pause without spending an attempt.
            return _schedule_retry(request_id, target, exc, attempts - 1, deps)
        except TransientError as exc:
            if not deps.policy.exhausted(attempts):
                return _schedule_retry(request_id, target, exc, attempts, deps)
            result = give_up(target, exc, attempts)

    with deps.sessions.begin() as session:
        first = records.finish(session, request_id, result, target, started, attempts)
    if first:
        _log_finished(request_id, target, result, attempts, time.monotonic() - clock)
    return Finished(result) if first else AlreadyFinal()


def _resolve(session: Session, request: Any, vault: KeyVault) -> Target | Result:
    try:
        return resolve(session, request, vault)
    except UndecryptableKey:
        return Result(
            Outcome.ERROR,
            f"The stored key of team {request.team_id!r} cannot be decrypted with the "
            "configured encryption keys.",
            error_code="undecryptable_key",
        )


def _schedule_retry(
    request_id: uuid.UUID, target: Target, error: TransientError, attempts: int, deps: Collaborators
) -> RetryLater:
    delay = deps.policy.delay_for(error, max(attempts, 1))
    note = Result(
        Outcome.ERROR,
        f"No answer yet ({error}); retrying in {delay:.1f}s.",
        error.http_status,
        error.code,
    )
    with deps.sessions.begin() as session:
        records.note_retry(session, request_id, note, attempts, delay)
    log.info(
        "validation.retry_scheduled",
        extra={
            "request_id": str(request_id),
            "team_id": target.team_id,
            "account": target.account,
            "reason": error.code,
            "http_status": error.http_status,
            "attempt": attempts,
            "delay_s": round(delay, 3),
        },
    )
    return RetryLater(delay, error)


def _log_finished(
    request_id: uuid.UUID, target: Target | None, result: Result, attempt: int, seconds: float
) -> None:
    log.info(
        "validation.finished",
        extra={
            "request_id": str(request_id),
            "team_id": target.team_id if target else None,
            "account": target.account if target else None,
            "outcome": result.outcome.value,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "attempt": attempt,
            "latency_ms": round(seconds * 1000, 1),
        },
    )
