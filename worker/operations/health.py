"""`ogv health`: is the service able to check keys right now?

Three checks, each bounded by the timeout:

- **database**: `SELECT 1` on the configured database, and its schema at the newest
  revision (an unmigrated database cannot record a check);
- **broker**: a connection (and, on Redis, a PING) to the configured broker;
- **worker**: a canary task sent through the queue the checks use, which a worker
  marks seen in its `health_checks` row. A ping is not enough: Celery workers have
  been seen answering pings but no longer consuming after a Redis reconnect. The
  canary expires with the wait, so a worker started later drops it unrun.

The worker check needs the other two, and is reported as not run without them.

Beside the checks, the report lists the **platforms**: the base URLs that answer
unlike their platform now (worker/checks/platform_health.py). That is an upstream
outage, not this service's: it is shown, but it does not make the service
unhealthy or change the exit code.

And the **guard**: the base URLs whose mass-change guard is tripped
(worker/checks/guard.py). Changes are then held until an operator decides, so a
tripped guard makes the report unhealthy until `ogv changes release` or `discard`
and a window under the threshold reset it.

And the **sunset**: the integrations still on Opsgenie with teams whose keys do not
work on JSM Operations (as last probed), whose deadline (`worker.platforms.sunset`)
is `WARN_DAYS` away or less. They are a warning until `FAIL_DAYS` are left; from
then on the report is unhealthy, since their alerts are about to stop.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from celery import Celery
from sqlalchemy import delete, text, update
from sqlalchemy.orm import Session, sessionmaker

from models import HealthCheck, utcnow
from models.migrate import schema_problem
from worker import readiness
from worker.checks import platform_health
from worker.checks.held import BaseUrlGuard, describe_tripped
from worker.checks.platform_health import PlatformState
from worker.platforms.sunset import FAIL_DAYS, WARN_DAYS
from worker.settings import Settings

CANARY_TASK = "ogv.canary"
"""The registered name of the canary task (worker/operations/canary.py)."""
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Check:
    """The verdict of one part of the service."""

    name: str
    healthy: bool
    message: str
    seconds: float


@dataclass(frozen=True)
class Report:
    """Every check, in order; healthy when all are. The platforms do not count."""

    checks: list[Check]
    unavailable: list[PlatformState] | None = field(default_factory=list)
    """Base URLs unavailable now; None when they could not be read (no database)."""
    tripped: list[BaseUrlGuard] | None = field(default_factory=list)
    """Base URLs whose guard is tripped now; None when they could not be read."""
    sunset: list[readiness.AtRisk] | None = field(default_factory=list)
    """Integrations at risk whose deadline is `WARN_DAYS` away or less; None: not read."""

    @property
    def failing_sunset(self) -> list[readiness.AtRisk]:
        """Those with `FAIL_DAYS` left or less: they make the report unhealthy."""
        return [risk for risk in self.sunset or () if risk.days_left <= FAIL_DAYS]

    @property
    def healthy(self) -> bool:
        return (
            all(check.healthy for check in self.checks)
            and not self.tripped
            and not self.failing_sunset
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `ogv health --json`; an `error` names every unhealthy part."""
        data: dict[str, Any] = {
            "healthy": self.healthy,
            "checks": {
                c.name: {"healthy": c.healthy, "message": c.message, "seconds": c.seconds}
                for c in self.checks
            },
        }
        data["platforms"] = {
            "unavailable": None
            if self.unavailable is None
            else [
                {
                    "base_url": s.base_url,
                    "platform": s.platform,
                    "since": s.unavailable_since.isoformat() if s.unavailable_since else None,
                }
                for s in self.unavailable
            ],
            "message": self.platforms_summary(),
        }
        data["guard"] = {
            "tripped": None
            if self.tripped is None
            else [
                {
                    "base_url": g.base_url,
                    "since": g.tripped_at.isoformat() if g.tripped_at else None,
                    "held": g.held,
                }
                for g in self.tripped
            ],
            "message": self.guard_summary(),
        }
        data["sunset"] = {
            "failing": bool(self.failing_sunset),
            "integrations": None
            if self.sunset is None
            else [
                {
                    "organization_id": r.organization_id,
                    "integration_id": r.integration_id,
                    "platform": r.platform,
                    "teams": r.teams,
                    "deadline": r.deadline.isoformat(),
                    "deadline_reason": r.deadline_reason,
                    "days_left": r.days_left,
                }
                for r in self.sunset
            ],
            "message": self.sunset_summary(),
        }
        if not self.healthy:
            data["error"] = {"code": "unhealthy", "message": self.summary()}
        return data

    def platforms_summary(self) -> str:
        """What the platforms' state is, and that it does not count as the service's."""
        if self.unavailable is None:
            return "not read: the database must work"
        return (
            f"{platform_health.describe(self.unavailable)} "
            "(an upstream outage: it does not make this service unhealthy)"
        )

    def guard_summary(self) -> str:
        """Which base URLs' guard is tripped, and what to run."""
        if self.tripped is None:
            return "not read: the database (and the shared Redis) must work"
        if not self.tripped:
            return "no guard is tripped"
        return f"{describe_tripped(self.tripped)}: see `ogv changes list`"

    def sunset_summary(self) -> str:
        """Which integrations' deadline is near, and what to run."""
        if self.sunset is None:
            return "not read: the database must work"
        if not self.sunset:
            return f"no integration at risk has {WARN_DAYS} days left or less"
        nearest = self.sunset[0]
        return (
            f"{len(self.sunset)} integration(s) still on Opsgenie with keys not working on "
            f"JSM Operations have {WARN_DAYS} days left or less (the nearest, integration "
            f"{nearest.integration_id}: {nearest.days_left} on {nearest.deadline.isoformat()}); "
            "see `ogv migration report`"
        )

    def summary(self) -> str:
        """One sentence naming each unhealthy part, for the error message."""
        failing = [f"{check.name}: {check.message}" for check in self.checks if not check.healthy]
        if self.tripped:
            failing.append(f"guard: {self.guard_summary()}")
        if self.failing_sunset:
            failing.append(f"sunset: {self.sunset_summary()}")
        return "; ".join(failing) if failing else "database, broker and worker are healthy"


class Unhealthy(RuntimeError):
    """Raised by a check that got an answer, and the answer is bad; the message says why."""


GuardReader = Callable[[Session], Sequence[BaseUrlGuard]]
"""Reads every base URL's guard (`worker.checks.held.guard_report`, bound to the
windows and thresholds of the settings)."""


def run_checks(
    sessions: sessionmaker[Session],
    app: Celery,
    timeout: float,
    read_guard: GuardReader | None = None,
    today: date | None = None,
) -> Report:
    """Check the database, the broker, then (when both work) that a worker consumes;
    with `read_guard`, which guards are tripped; and which integrations' deadline is
    near, as of `today` (default: today, UTC)."""
    database = bounded("database", lambda: check_database(sessions), timeout)
    broker = bounded("broker", lambda: check_broker(app, timeout), timeout)
    if database.healthy and broker.healthy:
        worker = bounded("worker", lambda: check_worker(sessions, app, timeout), timeout + 5)
    else:
        worker = Check("worker", False, "not checked: the database and broker must work", 0.0)
    unavailable = read_unavailable(sessions, timeout) if database.healthy else None
    tripped: list[BaseUrlGuard] | None = []
    if read_guard is not None:
        tripped = read_tripped(sessions, read_guard, timeout) if database.healthy else None
    sunset = read_sunset(sessions, timeout, today) if database.healthy else None
    return Report([database, broker, worker], unavailable, tripped, sunset)


def read_sunset(
    sessions: sessionmaker[Session], timeout: float, today: date | None
) -> list[readiness.AtRisk] | None:
    """The integrations at risk with `WARN_DAYS` left or less, or None if not read in time."""
    found: list[readiness.AtRisk] = []

    def read() -> str:
        with sessions() as session:
            found.extend(readiness.at_risk(session, today, within=WARN_DAYS))
        return f"{len(found)} at risk"

    return found if bounded("sunset", read, timeout).healthy else None


def bounded(name: str, check: Callable[[], str], timeout: float) -> Check:
    """Run `check` in a daemon thread: its message if it returns, unhealthy otherwise.

    A driver can block far longer than asked (an unanswered TCP connect), so the
    wait is cut short here; the abandoned thread dies with the process.
    """
    outcome: list[Check] = []
    started = time.monotonic()

    def target() -> None:
        try:
            message, healthy = check(), True
        except Exception as exc:
            message, healthy = _describe(exc), False
        outcome.append(Check(name, healthy, message, round(time.monotonic() - started, 3)))

    thread = threading.Thread(target=target, name=f"ogv-health-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome:
        return outcome[0]
    return Check(name, False, f"no answer within {timeout:g}s", round(timeout, 3))


def _describe(exc: Exception) -> str:
    if isinstance(exc, Unhealthy):
        return str(exc)
    # The first line of a driver's message says what failed; the rest is detail.
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def check_database(sessions: sessionmaker[Session]) -> str:
    """`SELECT 1`, and a schema at the revision this code expects (else Unhealthy)."""
    with sessions() as session:
        session.execute(text("SELECT 1"))
        problem = schema_problem(session.connection())
    if problem is not None:
        raise Unhealthy(f"it answers, but {problem}")
    return "SELECT 1 answered; the schema is up to date"


def read_unavailable(sessions: sessionmaker[Session], timeout: float) -> list[PlatformState] | None:
    """The base URLs unavailable now, or None if the database did not say in time."""
    found: list[PlatformState] = []

    def read() -> str:
        with sessions() as session:
            found.extend(platform_health.states(session, unavailable_only=True))
        return f"{len(found)} unavailable"

    return found if bounded("platforms", read, timeout).healthy else None


def read_tripped(
    sessions: sessionmaker[Session], read_guard: GuardReader, timeout: float
) -> list[BaseUrlGuard] | None:
    """The base URLs whose guard is tripped now, or None if they could not be read in time."""
    found: list[BaseUrlGuard] = []

    def read() -> str:
        with sessions() as session:
            found.extend(g for g in read_guard(session) if g.tripped)
        return f"{len(found)} tripped"

    return found if bounded("guard", read, timeout).healthy else None


def check_broker(app: Celery, timeout: float) -> str:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=math.ceil(timeout))
        # Opening a channel talks to the server (the Redis transport sends PING).
        connection.default_channel  # noqa: B018
        return f"connected to {connection.as_uri()}"  # as_uri() masks a password


def check_worker(sessions: sessionmaker[Session], app: Celery, timeout: float) -> str:
    """Send a canary through the checks' queue and wait until a worker marks it seen."""
    with sessions.begin() as session:
        row = HealthCheck()
        session.add(row)
        session.flush()
        check_id = row.id
    queue = app.conf.task_default_queue
    try:
        app.send_task(
            CANARY_TASK, args=[str(check_id)], expires=timeout, argsrepr=f"(check={check_id})"
        )
        worker = _wait_until_seen(sessions, check_id, timeout)
    finally:
        with sessions.begin() as session:
            session.execute(delete(HealthCheck).where(HealthCheck.id == check_id))
    if worker is None:
        raise Unhealthy(
            f"no worker ran a canary task from queue {queue!r} within {timeout:g}s: "
            "start a worker (celery -A worker worker), or restart the running ones if they "
            "stopped consuming"
        )
    return f"worker {worker} ran the canary task"


def _wait_until_seen(
    sessions: sessionmaker[Session], check_id: uuid.UUID, timeout: float
) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            row = session.get(HealthCheck, check_id)
            if row is not None and row.seen_at is not None:
                return row.worker or "(unnamed)"
        time.sleep(POLL_INTERVAL)
    return None


def mark_seen(session: Session, check_id: uuid.UUID, worker: str) -> bool:
    """Record that `worker` ran the canary of check `check_id`; False if it is gone."""
    done = session.execute(
        update(HealthCheck)
        .where(HealthCheck.id == check_id, HealthCheck.seen_at.is_(None))
        .values(seen_at=utcnow(), worker=worker[:255])
    )
    return bool(getattr(done, "rowcount", 0))


def shared_state(settings: Settings, timeout: float) -> dict[str, Any]:
    """Where account pacing and pauses live (worker/coordination.py), and whether its
    Redis answers a PING. Shown beside the checks, as `shared_state`; per process is
    a fact about the configuration, reported, not a failure."""
    from worker import coordination

    where = coordination.where(settings)
    check = bounded("shared_state", lambda: coordination.ping(settings, timeout), timeout)
    return {
        "shared": where.shared,
        "source": where.source,
        "url": where.url,
        "healthy": check.healthy,
        "message": check.message,
    }
