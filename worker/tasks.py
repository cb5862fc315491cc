"""The Celery tasks: thin adapters from a message to a plain function.

Messages carry ids and nothing else; each task re-reads the rest. A transient
Opsgenie failure becomes a retry with the delay the retry policy chose (for a
batch, a single-request retry of just that team); a lost database connection is
retried with backoff as well.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from celery import Task
from sqlalchemy.orm import Session, sessionmaker

from models import Requester
from worker import metrics
from worker.celery import app
from worker.checks import base_url_events, events, platform_health
from worker.checks.guard import Guard, Trip
from worker.checks.pipeline import (
    Collaborators,
    Confirming,
    RetryLater,
    run_attempt,
    run_batch,
)
from worker.checks.records import StatusChange
from worker.checks.retries import RetryPolicy, is_retried_database_error
from worker.checks.runtime import get_runtime
from worker.database import session_factory
from worker.enqueue import (
    BATCH_TASK,
    NOTIFY_PLATFORM_TASK,
    NOTIFY_SUNSET_TASK,
    NOTIFY_TASK,
    PRUNE_AUDIT_TASK,
    PRUNE_TASK,
    RECHECK_HELD_TASK,
    REVALIDATE_TASK,
    SUNSET_TASK,
    SWEEP_TASK,
    VALIDATE_TASK,
    publish,
    publish_batch,
)
from worker.periodic import dispatch, outbox, recheck, retention, sunset
from worker.settings import Settings, get_settings

MAX_DATABASE_RETRIES = 10


def collaborators() -> Collaborators:
    settings = get_settings()
    return dataclasses.replace(
        Collaborators.from_settings(settings, get_runtime()),
        lease=timedelta(seconds=settings.lease),
        max_wait=settings.max_inline_wait,
        on_changes=_notifier(settings),
        platform_thresholds=platform_health.Thresholds.from_settings(settings),
        on_platform_transitions=_document_notifier(settings),
        guard=Guard.from_settings(settings),
        on_guard_trips=_document_notifier(settings),
    )


def _notifier(settings: Settings) -> Callable[[list[StatusChange]], None]:
    if not settings.status_webhook_url:
        return lambda changes: None

    def notify(changes: list[StatusChange]) -> None:
        for change in changes:
            app.send_task(NOTIFY_TASK, args=[change.id])

    return notify


Announced = platform_health.Transition | Trip
"""An event about a base URL whose document is posted to OGV_STATUS_WEBHOOK_URL."""


def _document_notifier(settings: Settings) -> Callable[[Sequence[Announced]], None]:
    """Posts the document of each base URL that turned unavailable or recovered, or
    whose mass-change guard tripped: the message carries the id of its row."""
    if not settings.status_webhook_url:
        return lambda transitions: None

    def notify(transitions: Sequence[Announced]) -> None:
        for transition in transitions:
            if transition.event_id is None:
                continue  # recorded before, by whoever announced it
            app.send_task(
                NOTIFY_PLATFORM_TASK,
                args=[transition.event_id],
                argsrepr=f"({transition.event} {transition.base_url})",
            )

    return notify


def _retrying_database_errors(task: Task[Any, Any], policy: RetryPolicy, exc: Exception) -> None:
    if not is_retried_database_error(exc):
        raise exc
    raise task.retry(
        countdown=policy.backoff(task.request.retries + 1),
        max_retries=MAX_DATABASE_RETRIES,
        exc=exc,
    ) from exc


@app.task(name=VALIDATE_TASK, bind=True, max_retries=None, ignore_result=True)
def validate_request(self: Task[Any, Any], request_id: str) -> None:
    """Check the key of the team named by validation request `request_id`."""
    deps = collaborators()
    try:
        step = run_attempt(uuid.UUID(request_id), deps)
    except Exception as exc:
        _retrying_database_errors(self, deps.policy, exc)
        raise
    if isinstance(step, RetryLater):
        raise self.retry(countdown=step.delay)


@app.task(name=BATCH_TASK, bind=True, max_retries=None, ignore_result=True)
def validate_batch(self: Task[Any, Any], batch_id: str) -> int:
    """Check every team of batch `batch_id` concurrently; retry the transient ones alone,
    and send the second checks of failing verdicts about valid teams as a batch."""
    deps = collaborators()
    try:
        report = run_batch(uuid.UUID(batch_id), deps)
    except Exception as exc:
        _retrying_database_errors(self, deps.policy, exc)
        raise
    for request_id, retry in report.retries.items():
        if not isinstance(retry.error, Confirming):  # those go out as their batches, below
            publish(app, request_id, countdown=retry.delay)
    for second_checks in report.second_checks:
        publish_batch(app, second_checks, countdown=deps.guard.confirm_after)
    return len(report.steps)


# The dispatcher records and publishes a whole run (about 30 s for 1M teams alone on
# two cores): the checks' time limits, sized for one batch of calls, do not fit it.
DISPATCH_SOFT_TIME_LIMIT = 600
DISPATCH_TIME_LIMIT = 630


@app.task(
    name=REVALIDATE_TASK,
    ignore_result=True,
    soft_time_limit=DISPATCH_SOFT_TIME_LIMIT,
    time_limit=DISPATCH_TIME_LIMIT,
)
def revalidate(organization_id: int | None = None, run_id: str | None = None) -> str:
    """Re-check every stored team (of one organization, if given): the beat's job."""
    settings = get_settings()
    sessions = session_factory()
    run = (
        uuid.UUID(run_id)
        if run_id
        else dispatch.start_run(sessions, Requester.BEAT, organization_id)
    )
    plan = dispatch.Plan.from_settings(settings)
    dispatch.dispatch(
        sessions, lambda batch, countdown: publish_batch(app, batch, countdown), run, plan
    )
    return str(run)


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None, ignore_result=True)
def notify_status_change(self: Task[Any, Any], change_id: int) -> None:
    """POST one status change to OGV_STATUS_WEBHOOK_URL, retried with backoff."""
    settings = get_settings()
    if not settings.status_webhook_url:
        return
    sessions = session_factory()
    with sessions() as session:
        body = events.document(session, change_id)
    if body is None:
        return  # delivered already, or gone with its team
    _deliver(self, settings, "status_change", body, None, _Row(sessions, events, change_id))


@app.task(name=NOTIFY_PLATFORM_TASK, bind=True, max_retries=None, ignore_result=True)
def notify_platform_change(self: Task[Any, Any], event_id: int | dict[str, Any]) -> None:
    """POST a base URL's `platform.unavailable` / `platform.recovered` / `guard.tripped`
    document (its `base_url_events` row) to OGV_STATUS_WEBHOOK_URL, retried with backoff
    up to OGV_WEBHOOK_MAX_ATTEMPTS calls."""
    settings = get_settings()
    if not settings.status_webhook_url:
        return
    if isinstance(event_id, dict):
        # A message published before revision 0009 carried the document itself.
        key = platform_health.idempotency_key(event_id)
        _deliver(self, settings, "platform_change", event_id, key, None)
        return
    sessions = session_factory()
    with sessions() as session:
        found = base_url_events.read(session, event_id)
    if found is None:
        return  # delivered already
    key, document = found
    row = _Row(sessions, base_url_events, event_id)
    _deliver(self, settings, "platform_change", document, key, row)


class _Outbox(Protocol):
    """A table of webhook documents: `events`, `base_url_events`, `sunset`."""

    def count_attempt(self, session: Session, row_id: int, /) -> int: ...
    def mark_delivered(self, session: Session, row_id: int, /) -> None: ...


@dataclasses.dataclass(frozen=True)
class _Row:
    """The row a document is kept in, where its attempts are counted."""

    sessions: sessionmaker[Session]
    table: _Outbox
    row_id: int

    def count_attempt(self) -> int:
        with self.sessions.begin() as session:
            return self.table.count_attempt(session, self.row_id)

    def mark_delivered(self) -> None:
        with self.sessions.begin() as session:
            self.table.mark_delivered(session, self.row_id)


def _deliver(
    task: Task[Any, Any],
    settings: Settings,
    kind: str,
    document: dict[str, Any],
    key: str | None,
    row: _Row | None,
) -> None:
    """POST one webhook document, signed (OGV_WEBHOOK_SECRET) under `key`, and mark its
    row delivered; on failure count the attempt (on its row, when it has one) and retry
    with backoff until OGV_WEBHOOK_MAX_ATTEMPTS. `kind` labels the metric."""
    runtime = get_runtime()
    try:
        runtime.run(
            events.post(
                runtime.session,
                settings.status_webhook_url or "",
                document,
                settings.webhook_timeout,
                idempotency_key=key,
                keys=settings.webhook_keys(),
            )
        )
    except events.WebhookFailed as exc:
        attempts = row.count_attempt() if row is not None else task.request.retries + 1
        if attempts >= settings.webhook_max_attempts:
            metrics.webhook(kind, "given_up")
            raise
        metrics.webhook(kind, "failed")
        policy = RetryPolicy.from_settings(settings)
        raise task.retry(countdown=policy.backoff(attempts), exc=exc) from exc
    if row is not None:
        row.mark_delivered()
    metrics.webhook(kind, "delivered")


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_outbox() -> int:
    """Publish again every request and notification stranded by a lost message."""
    settings = get_settings()
    sessions = session_factory()
    after = timedelta(seconds=settings.outbox_republish_after)
    count = outbox.sweep(
        sessions,
        lambda request_id: publish(app, request_id),
        after,
        publish_batch=lambda batch_id: publish_batch(app, batch_id),
    )
    if settings.status_webhook_url:
        with sessions() as session:
            overdue = events.undelivered(session, after, settings.webhook_max_attempts, 1000)
        for change_id in overdue:
            app.send_task(NOTIFY_TASK, args=[change_id])
        with sessions() as session:
            notices = sunset.undelivered(session, after, settings.webhook_max_attempts)
            lost = base_url_events.undelivered(session, after, settings.webhook_max_attempts, 1000)
        for notice_id in notices:
            app.send_task(NOTIFY_SUNSET_TASK, args=[notice_id])
        for event_id in lost:
            app.send_task(NOTIFY_PLATFORM_TASK, args=[event_id])
        count += len(overdue) + len(notices) + len(lost)
    return count


@app.task(name=PRUNE_TASK, ignore_result=True)
def prune_history() -> dict[str, int]:
    """Delete the finished requests older than OGV_REQUEST_RETENTION_DAYS that nothing
    keeps, and the status history older than OGV_HISTORY_RETENTION_DAYS."""
    settings = get_settings()
    sessions = session_factory()
    return {
        "requests": retention.prune_requests(sessions, settings.request_retention_days),
        "history": retention.prune_history(sessions, settings.history_retention_days),
    }


@app.task(name=PRUNE_AUDIT_TASK, ignore_result=True)
def prune_audit() -> int:
    """Delete the audit events older than OGV_AUDIT_RETENTION_DAYS."""
    return retention.prune_audit(session_factory(), get_settings().audit_retention_days)


@app.task(name=RECHECK_HELD_TASK, ignore_result=True)
def recheck_held() -> int:
    """Check again the teams whose change the mass-change guard holds, every
    OGV_GUARD_RECHECK seconds each."""
    settings = get_settings()
    return recheck.recheck_held(session_factory(), app, settings.guard_recheck, settings.batch_size)


@app.task(name=SUNSET_TASK, ignore_result=True)
def announce_sunset() -> int:
    """Record (once) and announce the accounts whose deadline is 30, 7 or 1 days away."""
    settings = get_settings()

    def publish(notice_id: int) -> None:
        if settings.status_webhook_url:  # else the notice is recorded and logged only
            app.send_task(NOTIFY_SUNSET_TASK, args=[notice_id])

    return len(sunset.announce(session_factory(), publish))


@app.task(name=NOTIFY_SUNSET_TASK, bind=True, max_retries=None, ignore_result=True)
def notify_sunset(self: Task[Any, Any], notice_id: int) -> None:
    """POST one sunset notice to OGV_STATUS_WEBHOOK_URL, retried with backoff."""
    settings = get_settings()
    if not settings.status_webhook_url:
        return
    sessions = session_factory()
    with sessions() as session:
        body = sunset.document(session, notice_id)
    if body is None:
        return  # delivered already, or gone with its integration
    key = sunset.idempotency_key(notice_id)
    _deliver(self, settings, "sunset", body, key, _Row(sessions, sunset, notice_id))
