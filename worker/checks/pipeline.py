"""Attempts at validation requests, from ids to written outcomes.

One request (`run_attempt`) and a batch (`run_batch`) go through the same steps:

1. **claim**: in one short transaction, mark the requests running under a lease
   and load what each check needs (`rules.resolve_many`);
2. **probe**: ask Opsgenie, concurrently for a batch, on the process's session,
   each call waiting its turn in its account's pacing;
3. **settle**: a final answer becomes a `Completion`; a transient failure is
   retried later (alone, even inside a batch) until attempts run out;
4. **write**: one short transaction writes every outcome in bulk. When the database
   refuses that write (a value, a constraint, a trigger: not a lost connection),
   each outcome is written in a transaction of its own instead, and one that is
   still refused is a `WriteFailed` of that request alone: its attempt is counted
   in another small transaction, and once attempts run out it ends `error` with
   `write_failed`, its team untouched. No request is left running by its own data;
5. **watch**: another records how each base URL answered (`platform_health`), and
   announces a base URL that turned unavailable or recovered.

What an attempt tells (its log events and metrics) is said through
`worker.checks.journal`.

Every collaborator is a parameter, so tests drive this with a real database and
the real fake Opsgenie and no Celery at all. No transaction is open while
Opsgenie is asked.

Two failures of our own join the retried `TransientError`s of the Opsgenie client:
`ProbeFailed` (our code failed on one check's answer) and `WriteFailed` (the
database refused one check's outcome). Both cost an attempt and concern one request,
never its batch.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from models import Outcome, utcnow
from models.crypto import KeyVault
from worker.checks import claims, events, journal, platform_health, records
from worker.checks.guard import Guard, SharedStateUnavailable, Trip, announce
from worker.checks.opsgenie import AccountPaused, GateUnavailable, OpsgenieClient, TransientError
from worker.checks.ratelimit import AccountGate
from worker.checks.retries import RetryPolicy, is_retried_database_error
from worker.checks.rules import (
    CheckOptions,
    Result,
    Target,
    give_up,
    probe,
    rate_limit_of,
    resolve_many,
)
from worker.database import session_factory

if TYPE_CHECKING:
    from worker.checks.runtime import Runtime
    from worker.settings import Settings

NOT_CALLED = (AccountPaused, GateUnavailable)
"""Transient failures that happened before Opsgenie was called: they cost no attempt."""

WRITE_FAILED = "write_failed"

T = TypeVar("T")


class ProbeFailed(TransientError):
    """Returned when our own code failed on one check's probe (an answer nested past
    the recursion limit, say): that check is retried alone, and its batch goes on."""

    code = "probe_failed"


class Confirming(TransientError):
    """Not a failure: a valid team's key got a failing verdict, and the request waits
    for the second check that must confirm it (`Collaborators.guard.confirm_after`)."""

    code = "confirming"

    def __init__(self, first: Result) -> None:
        super().__init__(f"confirming {first.outcome.value} with a second check")
        self.first = first


class WriteFailed(TransientError):
    """Returned when the database refused to write one check's outcome: the attempt is
    counted, and the check retried alone until attempts run out."""

    code = WRITE_FAILED


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
    guard: Guard = field(default_factory=Guard)
    """Confirmation of failing verdicts about valid teams, and the mass-change guard."""
    on_guard_trips: Callable[[list[Trip]], None] = lambda trips: None
    """Called once per base URL whose guard tripped, after its commit (webhooks)."""

    @classmethod
    def from_settings(cls, settings: Settings, runtime: Runtime) -> Collaborators:
        """The configured database, key vault, retry policy, batch concurrency and
        check options, on this process's `runtime` (its client, gate and loop). The
        rest keeps its defaults: callers set what they need with `dataclasses.replace`."""
        return cls(
            sessions=session_factory(settings.effective_database_url, settings.database_pool_size),
            client=runtime.client,
            gate=runtime.gate,
            vault=KeyVault(settings.fernet_keys()),
            policy=RetryPolicy.from_settings(settings),
            run=runtime.run,
            concurrency=settings.batch_concurrency,
            options=CheckOptions.from_settings(settings),
        )


@dataclass
class Report:
    """What one run of the steps did, for the task adapter and the logs."""

    steps: dict[uuid.UUID, Step] = field(default_factory=dict)
    changes: list[records.StatusChange] = field(default_factory=list)
    second_checks: list[uuid.UUID] = field(default_factory=list)
    """Batches of `confirming` requests, each due after `Guard.confirm_after`: the task
    adapter publishes each once (its requests' steps are `RetryLater(Confirming)`)."""

    @property
    def retries(self) -> dict[uuid.UUID, RetryLater]:
        return {rid: s for rid, s in self.steps.items() if isinstance(s, RetryLater)}


@dataclass(frozen=True)
class _Claimed:
    request_id: uuid.UUID
    attempts: int
    found: Target | Result
    confirming: Outcome | None = None
    first_check_attempts: int = 0
    """The first check's share of `attempts` (a second check's retries count from it)."""


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
        claimed = [
            _Claimed(r.id, r.attempts, found[r.id], r.confirming, r.first_check_attempts)
            for r in requests
        ]
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
            except Exception as exc:
                # Our own code failed on this answer (JSON nested past the recursion limit
                # raises RecursionError, not ValueError): this check's failure, not its
                # batch's, and retried until attempts run out like any other.
                journal.probe_failed(item.request_id, item.found, exc)
                return ProbeFailed(f"the answer could not be read ({type(exc).__name__})")

    return list(await asyncio.gather(*(one(item) for item in claimed)))


@dataclass(frozen=True)
class _Retry:
    """A transient failure to note on its request, to be tried again after `delay`."""

    request_id: uuid.UUID
    target: Target
    error: TransientError
    attempts: int
    delay: float


@dataclass
class _Stored:
    """What the write step stored, and what the database refused."""

    written: records.Written = field(default_factory=lambda: records.Written([], []))
    noted: list[_Retry] = field(default_factory=list)
    refused: dict[uuid.UUID, StatementError] = field(default_factory=dict)
    """Request id → the error of its refused write (a completion's or a note's)."""


def _write(
    claimed: Sequence[_Claimed],
    answers: Sequence[Result | TransientError],
    started: datetime,
    seconds: float,
    deps: Collaborators,
) -> Report:
    """Settle the answers, store them, and say what happens next to each request."""
    completions, retries = _settle(claimed, answers, started, deps)
    stored = _store(completions, retries, deps)
    written = stored.written
    report = Report(changes=written.changes, second_checks=written.second_checks)
    finished, confirming = set(written.finished), set(written.confirming)
    for completion in completions:
        if completion.request_id in finished:
            report.steps[completion.request_id] = Finished(completion.result)
            journal.finished(completion, seconds)
        elif completion.request_id in confirming and completion.target is not None:
            delay = deps.guard.confirm_after
            report.steps[completion.request_id] = RetryLater(delay, Confirming(completion.result))
            journal.confirming(completion, delay)
    for retry in stored.noted:
        report.steps[retry.request_id] = RetryLater(retry.delay, retry.error)
        journal.retry_scheduled(
            retry.request_id, retry.target, retry.error, retry.attempts, retry.delay
        )
    report.steps.update(_count_refused(claimed, stored.refused, deps))
    journal.second_opinions(completions, written)
    for change in written.changes:
        events.log_change(change)
    if written.changes:
        deps.on_changes(written.changes)
    claimed_trips = _claim_trips(written.trips, deps)
    if claimed_trips:
        announce(claimed_trips)
        deps.on_guard_trips(claimed_trips)
    return report


def _claim_trips(trips: Sequence[Trip], deps: Collaborators) -> list[Trip]:
    """The trips this process is the one to announce, now that the writes that saw them
    committed: each is claimed in the window, and one caller alone wins each claim. A
    claim that fails is left for the next write against that base URL."""
    windows = deps.guard.windows
    if windows is None:
        return []
    unique = {(trip.base_url, trip.number): trip for trip in trips}
    won = []
    for trip in unique.values():
        try:
            with deps.sessions.begin() as session:
                if windows.claim(session.connection(), trip):
                    won.append(trip)
        except (SharedStateUnavailable, DBAPIError) as exc:
            journal.trip_unclaimed(trip.base_url, type(exc).__name__)
    return won


def _settle(
    claimed: Sequence[_Claimed],
    answers: Sequence[Result | TransientError],
    started: datetime,
    deps: Collaborators,
) -> tuple[list[records.Completion], list[_Retry]]:
    """Each answer as a completion to write, or a retry to note (step 3)."""
    completions, retries = [], []
    for item, answer in zip(claimed, answers, strict=True):
        target = item.found if isinstance(item.found, Target) else None
        called = target is not None and not isinstance(answer, NOT_CALLED)
        attempts = item.attempts + 1 if called else item.attempts
        own = attempts - item.first_check_attempts  # this check's, what retries count
        if isinstance(answer, TransientError) and target is not None:
            if isinstance(answer, NOT_CALLED) or not deps.policy.exhausted(own):
                delay = deps.policy.delay_for(answer, max(own, 1))
                retries.append(_Retry(item.request_id, target, answer, attempts, delay))
                continue
            answer = give_up(target, answer, own)
        assert isinstance(answer, Result)
        result = records.fitted(answer)
        completions.append(
            records.Completion(item.request_id, result, target, started, attempts, item.confirming)
        )
    return completions, retries


def _store(
    completions: Sequence[records.Completion], retries: Sequence[_Retry], deps: Collaborators
) -> _Stored:
    """Write every outcome and retry note in one transaction (step 4).

    When the database refuses it, and there is more than one write, each is tried
    in a transaction of its own, so that one refused write costs only its own
    request. A database that cannot be reached raises: the whole attempt is
    retried, as before.
    """
    stored = _alone(deps, functools.partial(_store_all, completions, retries, deps.guard))
    if not isinstance(stored, StatementError):
        return stored
    ids = [c.request_id for c in completions] + [r.request_id for r in retries]
    journal.write_refused(len(ids), _error_name(stored))
    if len(ids) == 1:  # nothing else to save: the same write alone would fail the same
        return _Stored(refused={ids[0]: stored})
    return _store_one_by_one(completions, retries, deps)


def _store_all(
    completions: Sequence[records.Completion],
    retries: Sequence[_Retry],
    guard: Guard,
    session: Session,
) -> _Stored:
    written = records.finish_many(session, completions, guard)
    for retry in retries:
        _note(session, retry)
    return _Stored(written, list(retries))


def _store_one_by_one(
    completions: Sequence[records.Completion], retries: Sequence[_Retry], deps: Collaborators
) -> _Stored:
    """Each write in a transaction of its own; a refused one is recorded, not raised."""
    stored = _Stored()
    for completion in completions:
        written = _alone(
            deps,
            functools.partial(records.finish_many, completions=[completion], guard=deps.guard),
        )
        if isinstance(written, StatementError):
            stored.refused[completion.request_id] = written
        else:
            stored.written.extend(written)
    for retry in retries:
        noted = _alone(deps, functools.partial(_note, retry=retry))
        if isinstance(noted, StatementError):
            stored.refused[retry.request_id] = noted
        else:
            stored.noted.append(retry)
    stored.written.changes.sort(key=lambda change: change.id)
    return stored


def _alone(deps: Collaborators, write: Callable[[Session], T]) -> T | StatementError:
    """`write` in a transaction of its own: what it returned, or the error that refused
    it. A database that cannot be reached raises."""
    try:
        with deps.sessions.begin() as session:
            return write(session)
    except StatementError as exc:
        if not _refused(exc):
            raise
        return exc


def _note(session: Session, retry: _Retry) -> None:
    note = _retry_note(retry.error, retry.delay)
    claims.note_retry(session, retry.request_id, note, retry.attempts, retry.delay)


def _refused(exc: StatementError) -> bool:
    """True when the database refused what was written (a value, a constraint, a
    trigger), False when it could not be reached or was busy: the first is this
    write's fault, and writing the same again fails again; the second is every
    write's, and worth retrying whole."""
    return not is_retried_database_error(exc)


def _count_refused(
    claimed: Sequence[_Claimed], refused: dict[uuid.UUID, StatementError], deps: Collaborators
) -> dict[uuid.UUID, Step]:
    """The step of each request whose write was refused, once its attempt is counted.

    This attempt counts even when Opsgenie was not called (a paused account's note
    refused, say): a request that can never be written must run out of attempts.
    """
    steps: dict[uuid.UUID, Step] = {}
    for item in claimed:
        if item.request_id in refused:
            target = item.found if isinstance(item.found, Target) else None
            name = _error_name(refused[item.request_id])
            step = _count_refused_write(
                item.request_id, target, item.attempts + 1, name, deps, item.first_check_attempts
            )
            if step is not None:
                steps[item.request_id] = step
    return steps


def _count_refused_write(
    request_id: uuid.UUID,
    target: Target | None,
    attempts: int,
    error: str,
    deps: Collaborators,
    first_check_attempts: int = 0,
) -> Step | None:
    """Count the attempt of a request whose outcome was refused, in a transaction of its
    own holding nothing from upstream; end the request once attempts run out.

    The team is never written: the outcome that would have changed it was not. Returns
    the request's step, or None when even this was refused (the request's lease then
    lapses, and the sweeper hands it on).
    """
    count: Callable[[Session], Step]
    if deps.policy.exhausted(attempts - first_check_attempts):
        count = functools.partial(_give_up_writing, request_id, target, attempts, error)
    else:
        count = functools.partial(_retry_writing, request_id, attempts, error, deps.policy)
    step = _alone(deps, count)
    if isinstance(step, StatementError):
        journal.write_failed(request_id, target, attempts, error, final=None)
        return None
    journal.write_failed(
        request_id, target, attempts, error, final=not isinstance(step, RetryLater)
    )
    if isinstance(step, Finished):
        journal.count_finished(step.result, target)
    elif isinstance(step, RetryLater) and target is not None:
        journal.count_retry(target, step.error)
    return step


def _retry_writing(
    request_id: uuid.UUID, attempts: int, error: str, policy: RetryPolicy, session: Session
) -> RetryLater:
    delay = policy.backoff(attempts)
    note = Result(
        Outcome.ERROR,
        f"The outcome could not be written (the database refused it: {error}); "
        f"retrying in {delay:.1f}s.",
        error_code=WRITE_FAILED,
    )
    claims.note_retry(session, request_id, note, attempts, delay)
    return RetryLater(delay, WriteFailed(f"the outcome could not be written ({error})"))


def _give_up_writing(
    request_id: uuid.UUID, target: Target | None, attempts: int, error: str, session: Session
) -> Finished | AlreadyFinal:
    result = _write_failed(target, attempts, error)
    # No target: the team is left as it was, since its outcome could not be written.
    completion = records.Completion(request_id, result, None, utcnow(), attempts)
    return (
        Finished(result) if records.finish_many(session, [completion]).finished else AlreadyFinal()
    )


def _write_failed(target: Target | None, attempts: int, name: str) -> Result:
    """The final outcome of a request whose outcome the database kept refusing."""
    who = (
        f"team {target.label!r} of {target.platform.title} account {target.account!r}"
        if target
        else "this request"
    )
    return Result(
        Outcome.ERROR,
        f"The outcome of the check of {who} could not be written after {attempts} "
        f"attempts (the database refused it: {name}). The team's status is unchanged.",
        error_code=WRITE_FAILED,
    )


def _error_name(exc: BaseException) -> str:
    """The driver's name for a database error (`CheckViolation`, `StringDataRightTruncation`),
    never its text: the text of a refused write quotes the values it carried."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return type(exc.orig).__name__
    return type(exc).__name__


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


__all__ = [
    "AlreadyFinal",
    "Collaborators",
    "Confirming",
    "Finished",
    "ProbeFailed",
    "Report",
    "RetryLater",
    "Step",
    "WriteFailed",
    "run_attempt",
    "run_batch",
]
