"""Attempts at validation requests, from ids to written outcomes.

One request (`run_attempt`) and a batch (`run_batch`) go through the same steps:

1. **claim**: in one short transaction, mark the requests running under a lease
   and load what each check needs (`rules.resolve_many`);
2. **probe**: ask Opsgenie, concurrently for a batch, on the process's session,
   each call waiting its turn in its account's pacing;
3. **settle**: a final answer becomes a `Completion`; a transient failure is
   retried later (alone, even inside a batch) until attempts run out;
4. **write**: one short transaction writes every outcome in bulk;
5. **watch**: another records how each base URL answered (`platform_health`), and
   announces a base URL that turned unavailable or recovered.

Every collaborator is a parameter, so tests drive this with a real database and
the real fake Opsgenie and no Celery at all. No transaction is open while
Opsgenie is asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from models import Outcome, utcnow
from models.crypto import KeyVault
from worker import metrics
from worker.checks import claims, platform_health, records
from worker.checks.opsgenie import AccountPaused, GateUnavailable, OpsgenieClient, TransientError
from worker.checks.ratelimit import AccountGate
from worker.checks.retries import RetryPolicy
from worker.checks.rules import (
    CheckOptions,
    Result,
    Target,
    give_up,
    probe,
    rate_limit_of,
    resolve_many,
)

log = logging.getLogger("ogv.pipeline")

NOT_CALLED = (AccountPaused, GateUnavailable)
"""Transient failures that happened before Opsgenie was called: they cost no attempt."""


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
    """What an attempt needs besides the request ids."""

    sessions: sessionmaker[Session]
    client: OpsgenieClient
    gate: AccountGate
    vault: KeyVault
    policy: RetryPolicy
    run: Callable[[Coroutine[Any, Any, Any]], Any]
    lease: timedelta = timedelta(minutes=5)
    """How long a worker holds a running request before the sweeper may hand it on."""
    max_wait: float = 5.0
    """The longest wait for an account's turn that is spent in place, not requeued."""
    concurrency: int = 100
    """How many checks of one batch may wait on Opsgenie at once. The batch books every
    check's turn up front, so a check that waits for a slot past its turn books again."""
    on_changes: Callable[[list[records.StatusChange]], None] = lambda changes: None
    """Called after a commit that changed team statuses (events, webhooks)."""
    options: CheckOptions = field(default_factory=CheckOptions)
    """Probes, platform base URLs, and the lookups a check may add."""
    platform_thresholds: platform_health.Thresholds = field(
        default_factory=platform_health.Thresholds
    )
    """When a base URL's answers make it unavailable, and when it recovers."""
    on_platform_transitions: Callable[[list[platform_health.Transition]], None] = (
        lambda transitions: None
    )
    """Called once per base URL that turned unavailable or recovered (webhooks)."""


@dataclass
class Report:
    """What one run of the steps did, for the task adapter and the logs."""

    steps: dict[uuid.UUID, Step] = field(default_factory=dict)
    changes: list[records.StatusChange] = field(default_factory=list)

    @property
    def retries(self) -> dict[uuid.UUID, RetryLater]:
        return {rid: s for rid, s in self.steps.items() if isinstance(s, RetryLater)}


@dataclass(frozen=True)
class _Claimed:
    request_id: uuid.UUID
    attempts: int
    found: Target | Result


def run_attempt(request_id: uuid.UUID, deps: Collaborators) -> Step:
    """Run one attempt of one request and say what should happen next."""
    report = _run(lambda session: claims.claim_one(session, request_id, deps.lease), deps)
    return report.steps.get(request_id, AlreadyFinal())


def run_batch(batch_id: uuid.UUID, deps: Collaborators) -> Report:
    """Run every pending request of a batch concurrently; retries are left to the caller."""
    return _run(lambda session: claims.claim_batch(session, batch_id, deps.lease), deps)


def _run(claim: Callable[[Session], Sequence[claims.Claim]], deps: Collaborators) -> Report:
    with deps.sessions.begin() as session:
        requests = claim(session)
        found = resolve_many(session, requests, deps.vault, deps.options.default_probe)
        claimed = [_Claimed(r.id, r.attempts, found[r.id]) for r in requests]
    if not claimed:
        return Report()
    started, clock = utcnow(), time.monotonic()
    answers = deps.run(_probe_all(claimed, deps))
    report = _write(claimed, answers, started, time.monotonic() - clock, deps)
    answered = [
        (item.found, answer)
        for item, answer in zip(claimed, answers, strict=True)
        if isinstance(item.found, Target)
    ]
    platform_health.observe(
        deps.sessions, answered, deps.platform_thresholds, deps.on_platform_transitions
    )
    return report


async def _probe_all(
    claimed: Sequence[_Claimed], deps: Collaborators
) -> list[Result | TransientError]:
    targets = [c.found for c in claimed if isinstance(c.found, Target)]
    booked = await deps.gate.reserve(Counter(t.gate_key for t in targets))
    booked_at = asyncio.get_running_loop().time()
    limit = asyncio.Semaphore(deps.concurrency)

    async def one(item: _Claimed) -> Result | TransientError:
        if not isinstance(item.found, Target):
            return item.found
        turn = booked_at + booked[item.found.gate_key].pop()
        if 0 < turn - booked_at <= deps.max_wait:
            # Wait for the account's turn before taking a slot: a call sleeping inside
            # the limit keeps a slot idle. `probe` checks the turn again once in a slot.
            await asyncio.sleep(turn - asyncio.get_running_loop().time())
        async with limit:
            try:
                return await probe(
                    item.found,
                    deps.client,
                    deps.gate,
                    turn=turn,
                    max_wait=deps.max_wait,
                    options=deps.options,
                )
            except TransientError as exc:
                return exc
            except RedisError as exc:
                # The pacing store failed for this call: retry it alone, not the batch.
                return GateUnavailable(f"the account pacing store failed ({type(exc).__name__})")

    return list(await asyncio.gather(*(one(item) for item in claimed)))


def _write(
    claimed: Sequence[_Claimed],
    answers: Sequence[Result | TransientError],
    started: datetime,
    seconds: float,
    deps: Collaborators,
) -> Report:
    report, completions, retries = Report(), [], []
    for item, answer in zip(claimed, answers, strict=True):
        target = item.found if isinstance(item.found, Target) else None
        called = target is not None and not isinstance(answer, NOT_CALLED)
        attempts = item.attempts + 1 if called else item.attempts
        if isinstance(answer, TransientError) and target is not None:
            if isinstance(answer, NOT_CALLED) or not deps.policy.exhausted(attempts):
                delay = deps.policy.delay_for(answer, max(attempts, 1))
                retries.append((item.request_id, target, answer, attempts, delay))
                continue
            answer = give_up(target, answer, attempts)
        assert isinstance(answer, Result)
        completions.append(records.Completion(item.request_id, answer, target, started, attempts))
    with deps.sessions.begin() as session:
        written = records.finish_many(session, completions)
        for request_id, _, error, attempts, delay in retries:
            claims.note_retry(session, request_id, _retry_note(error, delay), attempts, delay)
    finished = set(written.finished)
    for completion in completions:
        if completion.request_id in finished:
            report.steps[completion.request_id] = Finished(completion.result)
            _log_finished(completion, seconds)
            metrics.validation_finished(completion.result, completion.target)
    for request_id, target, error, attempts, delay in retries:
        report.steps[request_id] = RetryLater(delay, error)
        _log_retry(request_id, target, error, attempts, delay)
        metrics.retry_scheduled(target, error)
    report.changes = written.changes
    for change in written.changes:
        _log_change(change)
    if written.changes:
        deps.on_changes(written.changes)
    return report


def _retry_note(error: TransientError, delay: float) -> Result:
    state, reason = rate_limit_of(error)
    return Result(
        Outcome.ERROR,
        f"No answer yet ({error}); retrying in {delay:.1f}s.",
        error.http_status,
        error.code,
        rate_limit_state=state,
        rate_limit_reason=reason,
    )


def _log_retry(
    request_id: uuid.UUID, target: Target, error: TransientError, attempts: int, delay: float
) -> None:
    log.info(
        "validation.retry_scheduled",
        extra={
            "request_id": str(request_id),
            "team_id": target.team_id,
            "account": target.account,
            "platform": target.platform.name,
            "probe": target.probe,
            "reason": error.code,
            "http_status": error.http_status,
            "attempt": attempts,
            "delay_s": round(delay, 3),
        },
    )


def _log_finished(completion: records.Completion, seconds: float) -> None:
    target, result = completion.target, completion.result
    log.info(
        "validation.finished",
        extra={
            "request_id": str(completion.request_id),
            "team_id": target.team_id if target else None,
            "account": target.account if target else None,
            "platform": target.platform.name if target else None,
            "probe": target.probe if target else None,
            "outcome": result.outcome.value,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "attempt": completion.attempts,
            "latency_ms": round(seconds * 1000, 1),
        },
    )


def _log_change(change: records.StatusChange) -> None:
    log.info(
        "team.status_changed",
        extra={
            "team_id": change.team_id,
            "request_id": str(change.request_id),
            "old_status": change.old_status.value,
            "new_status": change.new_status.value,
        },
    )


__all__ = [
    "AlreadyFinal",
    "Collaborators",
    "Finished",
    "Report",
    "RetryLater",
    "Step",
    "run_attempt",
    "run_batch",
]
