"""Prometheus metrics: what the workers did, and what the database holds now.

The worker's main process serves them at
`http://OGV_METRICS_ADDRESS:OGV_METRICS_PORT/metrics` (default port 9808; 0 turns
the endpoint off). docs/METRICS.md lists each series with example queries.

    ogv_validations_total{outcome,platform}               requests finished
    ogv_opsgenie_request_duration_seconds{platform,probe,status_class}
                                                          each call to a platform
    ogv_retries_total{reason}                             retries scheduled
    ogv_rate_limit_pauses_total{account}                  429s that paused an account
    ogv_throttle_header_fallbacks_total{problem}          429s whose headers named no usable
                                                          wait: the backoff decided
    ogv_platform_transitions_total{platform,state}        base URLs turned unavailable
                                                          or recovered
    ogv_teams{status}                                     teams now, read at scrape
    ogv_oldest_pending_request_age_seconds                the queue's lag, read at scrape
    ogv_platform_unavailable{base_url,platform}           1 while a base URL is unavailable,
                                                          read at scrape
    ogv_attempts_total{base_url,platform,result}          calls by what came back
    ogv_webhooks_total{event,result}                      webhook calls delivered, failed,
                                                          given up
    ogv_worker_processes                                  the pool's processes (a worker is up)
    ogv_due_requests                                      checks whose time has come, waiting
    ogv_outbox_backlog_age_seconds{kind}                  how late the oldest of them is
    ogv_oldest_held_change_age_seconds{base_url}          how long the guard has held a change
    ogv_sunset_days_left{organization}                    days to the nearest deadline of an
                                                          organization's integrations still on
                                                          Opsgenie with keys not working on
                                                          JSM Ops, read at scrape

`ogv api` serves the gauges read from the database as well, on OGV_API_METRICS_PORT,
so they are there when every worker is down.

Checks run in the pool's processes (forked children under prefork), so counts go
through prometheus_client's multiprocess mode: each process writes its values to
files in a directory of its own worker, `OGV_DATA_DIR/metrics/<host>-<pid>/`, and
the main process merges them when scraped. The directory is made fresh before the
pool starts and removed at shutdown. The gauges are queried from the database
at scrape time, so every worker reports the same, current, numbers.

Labels hold outcomes, error codes, probe names, account names and base URLs (each
on the allowlist): never a key.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models import (
    HeldChange,
    PlatformHealth,
    RequestState,
    Team,
    TeamStatus,
    TeamStatusChange,
    ValidationRequest,
    utcnow,
)
from models.base import Outcome
from worker import readiness
from worker.platforms import PLATFORMS
from worker.platforms.throttle_headers import PROBLEMS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from worker.settings import Settings

log = logging.getLogger("ogv.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
THROTTLED = "throttled"
"""The error code of a 429 (`worker.checks.opsgenie.Throttled.code`): the account was paused."""
RETRY_REASONS = (
    THROTTLED,
    "account_paused",
    "server_error",
    "unrecognised_answer",
    "timeout",
    "connection_error",
    "dns_error",
)
"""Reasons shown at zero from the start, so a rate() has a series before the first retry."""
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

VALIDATIONS = Counter(
    "ogv_validations",
    "Validation requests finished, by outcome and platform (none: no call was made).",
    ["outcome", "platform"],
    registry=None,
)
OPSGENIE_LATENCY = Histogram(
    "ogv_opsgenie_request_duration_seconds",
    "Seconds from sending a probe to the platform's response headers (or the failure), "
    "by platform, probe and status class (2xx, 3xx, 4xx, 429, 5xx, error).",
    ["platform", "probe", "status_class"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
RETRIES = Counter(
    "ogv_retries",
    "Attempts scheduled again after a transient failure, by its error code.",
    ["reason"],
    registry=None,
)
PAUSES = Counter(
    "ogv_rate_limit_pauses",
    "Opsgenie 429 answers that paused every call to an account, by account name.",
    ["account"],
    registry=None,
)
THROTTLE_FALLBACKS = Counter(
    "ogv_throttle_header_fallbacks",
    "429 answers whose headers named no usable wait (missing, negative, absurd: over an "
    "hour, unparseable): the retry backed off instead.",
    ["problem"],
    registry=None,
)

PLATFORM_TRANSITIONS = Counter(
    "ogv_platform_transitions",
    "Base URLs that turned unavailable (most answers not the platform's own) or recovered, "
    "by platform and state; each transition is counted once, by the worker that made it.",
    ["platform", "state"],
    registry=None,
)
PLATFORM_STATES = ("unavailable", "recovered")

CONFIRMATIONS = Counter(
    "ogv_confirmations",
    "Failing verdicts about valid teams' keys, by what became of them: `started` (a second "
    "check is due), `confirmed` (it agreed), `disagreed` (it did not; the team kept valid).",
    ["result"],
    registry=None,
)
CONFIRMATION_RESULTS = ("started", "confirmed", "disagreed")
GUARD_TRIPS = Counter(
    "ogv_guard_trips",
    "Times the mass-change guard tripped for a base URL; counted once, by the worker that "
    "tripped it.",
    ["base_url"],
    registry=None,
)

ATTEMPTS = Counter(
    "ogv_attempts",
    "Calls to a base URL by what came back: `verdict` (the platform's own answer about the "
    "key), `unrecognised` (an answer not the platform's own), `error` (no answer: a timeout, "
    "a failed connection, a 5xx or 429, a paused account).",
    ["base_url", "platform", "result"],
    registry=None,
)
ATTEMPT_RESULTS = ("verdict", "unrecognised", "error")
WEBHOOKS = Counter(
    "ogv_webhooks",
    "Calls to OGV_STATUS_WEBHOOK_URL by event (`status_change`, `platform_change`) and "
    "result: `delivered`, `failed` (to be tried again), `given_up` (attempts ran out).",
    ["event", "result"],
    registry=None,
)
WEBHOOK_EVENTS = ("status_change", "platform_change", "sunset")
WEBHOOK_RESULTS = ("delivered", "failed", "given_up")

P = ParamSpec("P")


def _never_raise(hook: Callable[P, None]) -> Callable[P, None]:
    """Counting must not fail a check: a broken metric is logged and skipped."""

    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            log.warning("metrics.hook_failed", extra={"hook": hook.__name__}, exc_info=True)

    guarded.__name__ = hook.__name__
    return guarded


# --- hooks called by the checks (plain values: this module knows no check) ------------


@_never_raise
def validation_finished(
    outcome: str, error_code: str | None, platform: str | None, account: str | None
) -> None:
    """Count a finished request (platform None: no call was made); a final 429 paused
    its account as well."""
    VALIDATIONS.labels(outcome, platform or "none").inc()
    if error_code == THROTTLED and account is not None:
        PAUSES.labels(account).inc()


@_never_raise
def retry_scheduled(reason: str, account: str) -> None:
    """Count a retry by its reason (an error code); a 429 (not an already paused
    account) paused the account."""
    RETRIES.labels(reason).inc()
    if reason == THROTTLED:
        PAUSES.labels(account).inc()


@_never_raise
def throttle_fallback(problem: str) -> None:
    """Count a 429 whose headers named no usable wait (worker.platforms.throttle_headers)."""
    THROTTLE_FALLBACKS.labels(problem).inc()


@_never_raise
def platform_transition(platform: str, state: str) -> None:
    """Count a base URL turning unavailable or recovering (worker.checks.platform_health)."""
    PLATFORM_TRANSITIONS.labels(platform, state).inc()


@_never_raise
def confirmation(result: str) -> None:
    """Count a confirmation started, confirmed, or disagreed with (worker.checks.guard)."""
    CONFIRMATIONS.labels(result).inc()


@_never_raise
def guard_tripped(base_url: str) -> None:
    """Count the mass-change guard tripping for a base URL (worker.checks.guard)."""
    GUARD_TRIPS.labels(base_url).inc()


@_never_raise
def attempts(base_url: str, platform: str, result: str, count: int) -> None:
    """Count a batch's calls to one base URL that ended `result` (worker.checks.platform_health)."""
    ATTEMPTS.labels(base_url, platform, result).inc(count)


@_never_raise
def webhook(event: str, result: str) -> None:
    """Count one webhook call: `delivered`, `failed` or `given_up` (worker.tasks)."""
    WEBHOOKS.labels(event, result).inc()


def status_class(status: int) -> str:
    """`2xx`, `4xx`, `5xx`...; 429 is its own class, since it is retried, not final."""
    return "429" if status == 429 else f"{status // 100}xx"


@_never_raise
def opsgenie_call_observer(platform: str, probe: str, status: int | None, seconds: float) -> None:
    """Times every call of the Opsgenie client (its `on_answer`): status None is a failure."""
    label = "error" if status is None else status_class(status)
    OPSGENIE_LATENCY.labels(platform, probe, label).observe(seconds)


# --- what the database holds, read at scrape time --------------------------------------


@dataclass
class _Reading:
    """What one scrape read from the database."""

    teams: dict[TeamStatus, int]
    oldest_pending: float
    platforms: list[tuple[str, str, bool]]
    held: dict[str, tuple[int, float]]
    """Base URL → (held changes, seconds since the oldest was held)."""
    due: int
    backlog: dict[str, float]
    """`request` (and `notification`, with a webhook) → seconds the oldest has been late."""
    sunset: dict[int, int]
    """Organization → days to the nearest deadline of its integrations at risk."""


class DatabaseCollector(Collector):
    """Teams by status, the queue's lag and backlog, the unavailable base URLs and the
    held changes, queried on every scrape.

    `webhook_attempts` is OGV_WEBHOOK_MAX_ATTEMPTS when a webhook is configured: then
    the notifications not yet delivered are part of the outbox's backlog.
    """

    def __init__(
        self, sessions: sessionmaker[Session], webhook_attempts: int | None = None
    ) -> None:
        self._sessions = sessions
        self._webhook_attempts = webhook_attempts

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        try:
            with self._sessions() as session:
                reading = self._read(session, utcnow())
        except SQLAlchemyError as exc:
            log.warning("metrics.database_unavailable", extra={"error": type(exc).__name__})
            return []
        return self._families(reading)

    def _read(self, session: Session, now: datetime) -> _Reading:
        counts = dict(
            session.execute(select(Team.status, func.count()).group_by(Team.status)).all()
        )
        oldest = session.scalar(
            select(func.min(ValidationRequest.created_at)).where(
                ValidationRequest.state == RequestState.PENDING
            )
        )
        platforms = session.execute(
            select(
                PlatformHealth.base_url,
                PlatformHealth.platform,
                PlatformHealth.unavailable_since.is_not(None),
            )
        ).all()
        held = session.execute(
            select(HeldChange.base_url, func.count(), func.min(HeldChange.held_at)).group_by(
                HeldChange.base_url
            )
        ).all()
        # Due: a waiting request whose countdown, retry or second check has come (the
        # outbox sweeper's own test of it, without its grace period).
        due_at = func.coalesce(
            ValidationRequest.next_attempt_at,
            ValidationRequest.published_at,
            ValidationRequest.created_at,
        )
        due, earliest = session.execute(
            select(func.count(), func.min(due_at)).where(
                ValidationRequest.state.in_((RequestState.PENDING, RequestState.CONFIRMING)),
                due_at <= now,
            )
        ).one()
        backlog = {"request": _age(now, earliest)}
        if self._webhook_attempts is not None:
            undelivered = session.scalar(
                select(func.min(TeamStatusChange.changed_at)).where(
                    TeamStatusChange.notified_at.is_(None),
                    TeamStatusChange.notify_attempts < self._webhook_attempts,
                )
            )
            backlog["notification"] = _age(now, undelivered)
        return _Reading(
            teams={status: counts.get(status, 0) for status in TeamStatus},
            oldest_pending=_age(now, oldest),
            platforms=[(url, platform, bool(down)) for url, platform, down in platforms],
            held={url: (count, _age(now, first)) for url, count, first in held},
            due=due,
            backlog=backlog,
            sunset=_nearest_deadlines(session, now),
        )

    @staticmethod
    def _families(reading: _Reading | None) -> list[Metric]:
        by_status = GaugeMetricFamily(
            "ogv_teams", "Teams by the status of their key, now.", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "ogv_oldest_pending_request_age_seconds",
            "Seconds since the oldest pending validation request was created (0: none).",
            value=reading.oldest_pending if reading else None,
        )
        unavailable = GaugeMetricFamily(
            "ogv_platform_unavailable",
            "1 while a base URL is unavailable (most of its answers are not its platform's "
            "own), else 0; one series per base URL that has answered.",
            labels=["base_url", "platform"],
        )
        held_changes = GaugeMetricFamily(
            "ogv_held_changes",
            "Changes from valid to a failing status that the mass-change guard holds, by "
            "base URL, now.",
            labels=["base_url"],
        )
        held_age = GaugeMetricFamily(
            "ogv_oldest_held_change_age_seconds",
            "Seconds since the oldest change the mass-change guard holds was held, by base URL.",
            labels=["base_url"],
        )
        due = GaugeMetricFamily(
            "ogv_due_requests",
            "Validation requests waiting for a worker whose time has come (their countdown, "
            "retry or second check is due), now.",
            value=reading.due if reading else None,
        )
        backlog = GaugeMetricFamily(
            "ogv_outbox_backlog_age_seconds",
            "Seconds the oldest due request (kind `request`) or undelivered status-change "
            "webhook (kind `notification`) has waited; 0: none.",
            labels=["kind"],
        )
        if reading is not None:
            for status, count in reading.teams.items():
                by_status.add_metric([status.value], count)
            for base_url, platform, down in reading.platforms:
                unavailable.add_metric([base_url, platform], 1.0 if down else 0.0)
            for base_url, (count, age) in reading.held.items():
                held_changes.add_metric([base_url], count)
                held_age.add_metric([base_url], age)
            for kind, age in reading.backlog.items():
                backlog.add_metric([kind], age)
        days_left = GaugeMetricFamily(
            "ogv_sunset_days_left",
            "Days to the nearest deadline of the organization's integrations still on Opsgenie "
            "with keys not working on JSM Operations (0 once passed); no series without any.",
            labels=["organization"],
        )
        for organization, days in (reading.sunset if reading else {}).items():
            days_left.add_metric([str(organization)], days)
        return [by_status, oldest, unavailable, held_changes, held_age, due, backlog, days_left]


def _nearest_deadlines(session: Session, now: datetime) -> dict[int, int]:
    """Each organization's fewest days left among its integrations at risk."""
    nearest: dict[int, int] = {}
    for risk in readiness.at_risk(session, now.date()):  # nearest first
        nearest.setdefault(risk.organization_id, risk.days_left)
    return nearest


def _age(now: datetime, since: datetime | None) -> float:
    """Seconds from `since` to `now`, never negative; 0 when there is nothing."""
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


# --- the endpoint, in the worker's main process ----------------------------------------


@dataclass
class _Endpoint:
    directory: Path
    pid: int
    server: WSGIServer | None = None
    thread: threading.Thread | None = None


_endpoint: _Endpoint | None = None


def prepare_worker(settings: Settings) -> None:
    """Before the pool starts: give this worker's processes a fresh metrics directory."""
    global _endpoint
    if settings.metrics_port == 0:
        return
    try:
        directory = _fresh_directory(settings.data_dir / "metrics")
    except OSError as exc:
        log.warning("metrics.disabled", extra={"reason": f"{type(exc).__name__}: {exc}"})
        return
    # Forked pool processes inherit the variable and write their own files there.
    os.environ[MULTIPROC_ENV] = str(directory)
    _use_multiprocess_values()
    _endpoint = _Endpoint(directory, os.getpid())
    _start_at_zero(settings)


def _start_at_zero(settings: Settings) -> None:
    """Every series a rate() or an alert needs from the start, at 0."""
    for outcome in Outcome:
        for platform in (*PLATFORMS, "none"):
            VALIDATIONS.labels(outcome.value, platform)
    for reason in RETRY_REASONS:
        RETRIES.labels(reason)
    for platform in PLATFORMS:
        for state in PLATFORM_STATES:
            PLATFORM_TRANSITIONS.labels(platform, state)
    for result in CONFIRMATION_RESULTS:
        CONFIRMATIONS.labels(result)
    for each in PLATFORMS.values():  # the configured hosts, at 0 from the start
        for result in ATTEMPT_RESULTS:
            ATTEMPTS.labels(settings.platform_base_url(each), each.name, result)
    for event in WEBHOOK_EVENTS:
        for result in WEBHOOK_RESULTS:
            WEBHOOKS.labels(event, result)
    for problem in PROBLEMS:
        THROTTLE_FALLBACKS.labels(problem)


def _use_multiprocess_values() -> None:
    # prometheus_client picks how values are stored when it is first imported, and
    # the `celery` command imports it (through Flower's command plugin) before any
    # of our code runs. No value of ours exists yet, so choose again now that the
    # directory is set: every value created from here on is written to a file.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _fresh_directory(base: Path) -> Path:
    """`base/<host>-<pid>`, empty; directories of dead workers of this host are removed."""
    host = socket.gethostname()
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(f"{host}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = base / f"{host}-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _WorkerCollector(Collector):
    """`ogv_worker_processes`: served only by a worker whose pool has started."""

    def __init__(self, processes: int) -> None:
        self._processes = processes

    def collect(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily(
                "ogv_worker_processes",
                "Processes (or threads) in this worker's pool; the series exists while a "
                "worker serves its metrics.",
                value=self._processes,
            )
        ]


def database_collector(settings: Settings, sessions: sessionmaker[Session]) -> DatabaseCollector:
    """The gauges read from the database, with undelivered webhooks once one is set."""
    attempts = settings.webhook_max_attempts if settings.status_webhook_url else None
    return DatabaseCollector(sessions, attempts)


def serve(settings: Settings, sessions: sessionmaker[Session], processes: int = 1) -> None:
    """Serve /metrics from this (the main) process, once the pool of `processes` has started."""
    if _endpoint is None or _endpoint.server is not None:
        return
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_endpoint.directory))  # type: ignore[no-untyped-call]
    registry.register(database_collector(settings, sessions))
    registry.register(_WorkerCollector(processes))
    started = _listen(registry, settings.metrics_address, settings.metrics_port)
    if started is not None:
        _endpoint.server, _endpoint.thread = started


def serve_api(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """`ogv api`'s own /metrics: the gauges read from the database, so that they are
    scraped even when every worker is down. In a daemon thread, for the process's life."""
    if settings.api_metrics_port == 0:
        return
    registry = CollectorRegistry()
    registry.register(database_collector(settings, sessions))
    _listen(registry, settings.metrics_address, settings.api_metrics_port)


def _listen(
    registry: CollectorRegistry, address: str, port: int
) -> tuple[WSGIServer, threading.Thread] | None:
    try:
        server, thread = start_http_server(port, address, registry=registry)
    except OSError as exc:
        # Another process on this host has the port: keep working, say so once.
        log.warning(
            "metrics.unavailable",
            extra={"port": port, "reason": f"{type(exc).__name__}: {exc}"},
        )
        return None
    log.info("metrics.serving", extra={"address": address, "port": server.server_port})
    return server, thread


def shutdown() -> None:
    """Stop serving and remove this worker's metrics directory (worker shutdown)."""
    global _endpoint
    endpoint, _endpoint = _endpoint, None
    if endpoint is None or endpoint.pid != os.getpid():
        return  # a forked pool process holds a copy; only the main process cleans up
    if endpoint.server is not None:
        endpoint.server.shutdown()
        endpoint.server.server_close()
    shutil.rmtree(endpoint.directory, ignore_errors=True)
