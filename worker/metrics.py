"""Prometheus metrics: what the workers did, and what the database holds now.

The worker's main process serves them at
`http://OGV_METRICS_ADDRESS:OGV_METRICS_PORT/metrics` (default port 9808; 0 turns
the endpoint off). docs/METRICS.md lists each series with example queries.

    ogv_validations_total{outcome,platform}               requests finished
    ogv_opsgenie_request_duration_seconds{platform,probe,status_class}
                                                          each call to a platform
    ogv_retries_total{reason}                             retries scheduled
    ogv_rate_limit_pauses_total{account}                  429s that paused an account
    ogv_platform_transitions_total{platform,state}        base URLs turned unavailable
                                                          or recovered
    ogv_teams{status}                                     teams now, read at scrape
    ogv_oldest_pending_request_age_seconds                the queue's lag, read at scrape
    ogv_platform_unavailable{base_url,platform}           1 while a base URL is unavailable,
                                                          read at scrape

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
    ValidationRequest,
    utcnow,
)
from models.base import Outcome
from worker.platforms import PLATFORMS

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


def status_class(status: int) -> str:
    """`2xx`, `4xx`, `5xx`...; 429 is its own class, since it is retried, not final."""
    return "429" if status == 429 else f"{status // 100}xx"


@_never_raise
def opsgenie_call_observer(platform: str, probe: str, status: int | None, seconds: float) -> None:
    """Times every call of the Opsgenie client (its `on_answer`): status None is a failure."""
    label = "error" if status is None else status_class(status)
    OPSGENIE_LATENCY.labels(platform, probe, label).observe(seconds)


# --- what the database holds, read at scrape time --------------------------------------


class DatabaseCollector(Collector):
    """Teams by status, the oldest pending request and the unavailable base URLs,
    queried on every scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        try:
            with self._sessions() as session:
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
                held = dict(
                    session.execute(
                        select(HeldChange.base_url, func.count()).group_by(HeldChange.base_url)
                    ).all()
                )
        except SQLAlchemyError as exc:
            log.warning("metrics.database_unavailable", extra={"error": type(exc).__name__})
            return []
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        return self._families(
            {status: counts.get(status, 0) for status in TeamStatus},
            age,
            [(url, platform, bool(down)) for url, platform, down in platforms],
            held,
        )

    @staticmethod
    def _families(
        teams: dict[TeamStatus, int] | None = None,
        age: float | None = None,
        platforms: list[tuple[str, str, bool]] | None = None,
        held: dict[str, int] | None = None,
    ) -> list[Metric]:
        by_status = GaugeMetricFamily(
            "ogv_teams", "Teams by the status of their key, now.", labels=["status"]
        )
        for status, count in (teams or {}).items():
            by_status.add_metric([status.value], count)
        oldest = GaugeMetricFamily(
            "ogv_oldest_pending_request_age_seconds",
            "Seconds since the oldest pending validation request was created (0: none).",
            value=age,
        )
        unavailable = GaugeMetricFamily(
            "ogv_platform_unavailable",
            "1 while a base URL is unavailable (most of its answers are not its platform's "
            "own), else 0; one series per base URL that has answered.",
            labels=["base_url", "platform"],
        )
        for base_url, platform, down in platforms or []:
            unavailable.add_metric([base_url, platform], 1.0 if down else 0.0)
        held_changes = GaugeMetricFamily(
            "ogv_held_changes",
            "Changes from valid to a failing status that the mass-change guard holds, by "
            "base URL, now.",
            labels=["base_url"],
        )
        for base_url, count in (held or {}).items():
            held_changes.add_metric([base_url], count)
        return [by_status, oldest, unavailable, held_changes]


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


def serve(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Serve /metrics from this (the main) process, once the pool has started."""
    if _endpoint is None or _endpoint.server is not None:
        return
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_endpoint.directory))  # type: ignore[no-untyped-call]
    registry.register(DatabaseCollector(sessions))
    try:
        _endpoint.server, _endpoint.thread = start_http_server(
            settings.metrics_port, settings.metrics_address, registry=registry
        )
    except OSError as exc:
        # Another worker on this host has the port: keep validating, say so once.
        log.warning(
            "metrics.unavailable",
            extra={"port": settings.metrics_port, "reason": f"{type(exc).__name__}: {exc}"},
        )
        return
    log.info(
        "metrics.serving",
        extra={"address": settings.metrics_address, "port": _endpoint.server.server_port},
    )


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
