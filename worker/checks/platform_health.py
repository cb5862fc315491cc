"""How each base URL answers: the alarm when a whole host stops answering like its platform.

SPEC §6: an answer that is not the platform's own (a retired host's 410, a proxy's
HTML page, a redirect to a login page) is no verdict about a key, so the check ends
`error` (`unrecognised_answer`) and the team's status is kept. One such answer says
little; most answers of a base URL being like that say the host is retired or
something sits in front of it, and an operator should hear it once, not once per team.

After each batch is written, the pipeline tallies per base URL the answers that
came back (verdicts and unrecognised answers; a timeout, a 5xx or a 429 is no
answer) and `observe` records them in `platform_health`, one row per base URL:

- a window of `Thresholds.window` (`OGV_PLATFORM_WINDOW`) collects answers; a window
  older than that restarts at zero when the next answers arrive;
- once the window holds at least `Thresholds.min_answers` (`OGV_PLATFORM_MIN_ANSWERS`)
  answers and more than half were unrecognised, the base URL turns **unavailable**
  (`unavailable_since` set) and the window restarts;
- while unavailable, once the window holds at least the minimum and at most half
  were unrecognised, it **recovers** (`unavailable_since` cleared), the window
  restarts.

Each row is written by one upsert that locks it (PostgreSQL's ON CONFLICT DO
UPDATE takes the row lock, as FOR UPDATE would; SQLite's first write takes the
database's write lock), and a transition is one more UPDATE under that lock. So
however many worker processes record at once, a transition happens exactly once,
and its `Transition` is returned to the one caller that made it, to announce:
the `platform.unavailable` / `platform.recovered` log event, a metric, and the
webhook document. The document is written in the same transaction
(`base_url_events`, `event_id`), so a lost message is sent again by the outbox
sweeper. Nothing here ever sees a key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Row, bindparam, case, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import Outcome, PlatformHealth, utcnow
from worker.checks import base_url_events

# `ogv status` and `ogv health` read `states` and `describe` only: the checks'
# HTTP client, rules and metrics are imported where the workers use them.
if TYPE_CHECKING:
    from worker.checks.opsgenie import TransientError
    from worker.checks.rules import Result, Target
    from worker.settings import Settings

log = logging.getLogger("ogv.platform_health")

State = Literal["unavailable", "recovered"]
_Window = Row[str, int, int, datetime | None]
"""A row's platform, answers, unrecognised answers and unavailable_since, once added to."""


@dataclass(frozen=True)
class Thresholds:
    """When a base URL turns unavailable, and when it recovers."""

    window: timedelta = timedelta(seconds=300)
    """How long one window collects answers before it restarts at zero."""
    min_answers: int = 20
    """Answers a window needs before it may decide anything."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(timedelta(seconds=settings.platform_window), settings.platform_min_answers)


@dataclass(frozen=True)
class Tally:
    """How one base URL answered in one batch."""

    platform: str
    answers: int = 0
    """Verdicts plus unrecognised answers; failures with no answer are not counted."""
    unrecognised: int = 0


@dataclass(frozen=True)
class Transition:
    """A base URL turned unavailable, or recovered: to be announced once."""

    base_url: str
    platform: str
    state: State
    at: datetime
    answers: int
    """The answers of the window that decided it."""
    unrecognised: int
    event_id: int | None = field(default=None, compare=False)
    """Its row in `base_url_events`, once recorded: what the webhook task reads."""

    @property
    def event(self) -> str:
        return f"platform.{self.state}"

    def document(self) -> dict[str, Any]:
        """The webhook's JSON: `since` the outage began, or `at` which it ended."""
        return {
            "event": self.event,
            "base_url": self.base_url,
            "platform": self.platform,
            "since" if self.state == "unavailable" else "at": self.at.isoformat(),
            "answers": self.answers,
            "unrecognised": self.unrecognised,
        }


@dataclass(frozen=True)
class PlatformState:
    """One `platform_health` row as operators read it."""

    base_url: str
    platform: str
    unavailable: bool
    unavailable_since: datetime | None
    changed_at: datetime | None
    window_started_at: datetime
    answers: int
    unrecognised: int


def idempotency_key(document: dict[str, Any]) -> str:
    """The same key for every delivery of one transition's document."""
    when = document.get("since") or document.get("at")
    digest = hashlib.sha256(f"{document['base_url']}|{when}".encode()).hexdigest()[:24]
    return f"ogv-{document['event']}-{digest}"


def tally(answered: Iterable[tuple[Target, Result | TransientError]]) -> dict[str, Tally]:
    """Per base URL, the answers among these checks' outcomes, and the unrecognised ones.

    A verdict about the key, or an unrecognised answer, is an answer. A timeout, a
    5xx, a 429, a paused account or an allowlist refusal says nothing about what
    the host answers, so it is left out.
    """
    from worker.checks.opsgenie import UnrecognisedAnswer
    from worker.checks.rules import Result

    counts: dict[str, tuple[str, int, int]] = {}
    for target, answer in answered:
        if isinstance(answer, UnrecognisedAnswer):
            bad = 1
        elif isinstance(answer, Result) and answer.outcome.judges_key:
            bad = 0
        else:
            continue
        _, answers, unrecognised = counts.get(target.base_url, ("", 0, 0))
        counts[target.base_url] = (target.platform.name, answers + 1, unrecognised + bad)
    return {url: Tally(*values) for url, values in counts.items()}


def count_attempts(answered: Iterable[tuple[Target, Result | TransientError]]) -> None:
    """Count the batch's calls per base URL by what came back: a verdict, an answer not
    the platform's own, or none (`ogv_attempts_total`, for the error ratios' alerts)."""
    from worker import metrics
    from worker.checks.opsgenie import UnrecognisedAnswer
    from worker.checks.rules import Result

    counts: Counter[tuple[str, str, str]] = Counter()
    for target, answer in answered:
        if isinstance(answer, UnrecognisedAnswer):
            result = "unrecognised"
        elif isinstance(answer, Result) and answer.outcome.judges_key:
            result = "verdict"
        elif isinstance(answer, Result) and answer.outcome is not Outcome.ERROR:
            continue  # decided without an answer about the key, nor a failure
        else:
            result = "error"
        counts[(target.base_url, target.platform.name, result)] += 1
    for (base_url, platform, result), count in counts.items():
        metrics.attempts(base_url, platform, result, count)


def record(
    session: Session,
    tallies: dict[str, Tally],
    thresholds: Thresholds,
    now: datetime | None = None,
) -> list[Transition]:
    """Add one batch's tallies to their windows; return the transitions they made.

    One upsert per base URL, plus one UPDATE and the event's row when it changes
    state. Rows are taken
    in base-URL order, so two batches that share base URLs never deadlock. Never
    commits: the caller's transaction holds the row locks until it ends.
    """
    now = now or utcnow()
    transitions = []
    for base_url in sorted(tallies):
        row = _add(session, base_url, tallies[base_url], thresholds, now)
        transition = _decide(base_url, row, thresholds, now)
        if transition is not None:
            _restart(session, base_url, transition, now)
            document = transition.document()
            event_id = base_url_events.record(
                session.connection(), idempotency_key(document), base_url, document
            )
            transitions.append(dataclasses.replace(transition, event_id=event_id))
    return transitions


def _add(
    session: Session, base_url: str, counted: Tally, thresholds: Thresholds, now: datetime
) -> _Window:
    """Insert the row, or add to its window (restarted first when it has expired)."""
    from sqlalchemy.dialects import postgresql, sqlite

    model = PlatformHealth
    insert = (
        postgresql.insert(model)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(model)
    )
    at = bindparam("now", now, type_=model.window_started_at.type)
    expired = model.window_started_at <= now - thresholds.window
    statement = (
        insert.values(
            base_url=base_url,
            platform=counted.platform,
            window_started_at=at,
            answers=counted.answers,
            unrecognised=counted.unrecognised,
        )
        .on_conflict_do_update(
            index_elements=[model.base_url],
            set_={
                "platform": counted.platform,
                "window_started_at": case((expired, at), else_=model.window_started_at),
                "answers": case((expired, 0), else_=model.answers) + counted.answers,
                "unrecognised": case((expired, 0), else_=model.unrecognised) + counted.unrecognised,
            },
        )
        .returning(model.platform, model.answers, model.unrecognised, model.unavailable_since)
    )
    return session.execute(statement).one()


def _decide(
    base_url: str, row: _Window, thresholds: Thresholds, now: datetime
) -> Transition | None:
    if row.answers < thresholds.min_answers:
        return None
    mostly_unrecognised = 2 * row.unrecognised > row.answers
    if row.unavailable_since is None and mostly_unrecognised:
        state: State = "unavailable"
    elif row.unavailable_since is not None and not mostly_unrecognised:
        state = "recovered"
    else:
        return None
    return Transition(base_url, row.platform, state, now, row.answers, row.unrecognised)


def _restart(session: Session, base_url: str, transition: Transition, now: datetime) -> None:
    """Record the new state and start a fresh window: the next decision needs new answers."""
    session.execute(
        update(PlatformHealth)
        .where(PlatformHealth.base_url == base_url)
        .values(
            unavailable_since=now if transition.state == "unavailable" else None,
            changed_at=now,
            window_started_at=now,
            answers=0,
            unrecognised=0,
        )
    )


def observe(
    sessions: sessionmaker[Session],
    answered: Iterable[tuple[Target, Result | TransientError]],
    thresholds: Thresholds,
    on_transitions: Callable[[list[Transition]], None] = lambda transitions: None,
) -> list[Transition]:
    """Record how a batch's base URLs answered, in a short transaction of its own, and
    announce what changed once it committed.

    The batch's outcomes are written already: whatever fails here (the database, the
    broker behind `on_transitions`) is logged and swallowed, never the batch's failure.
    """
    answered = list(answered)
    count_attempts(answered)
    tallies = tally(answered)
    if not tallies:
        return []
    try:
        with sessions.begin() as session:
            transitions = record(session, tallies, thresholds)
    except Exception as exc:
        log.warning(
            "platform_health.record_failed",
            extra={"base_urls": sorted(tallies), "error": type(exc).__name__},
            exc_info=True,
        )
        return []
    for transition in transitions:
        announce(transition)
    if transitions:
        try:
            on_transitions(transitions)
        except Exception as exc:
            log.warning(
                "platform_health.notify_failed",
                extra={"base_urls": [t.base_url for t in transitions], "error": type(exc).__name__},
                exc_info=True,
            )
    return transitions


def announce(transition: Transition) -> None:
    """The log event and the metric of one transition (its webhook is the caller's)."""
    level = logging.WARNING if transition.state == "unavailable" else logging.INFO
    log.log(
        level,
        transition.event,
        extra={
            "base_url": transition.base_url,
            "platform": transition.platform,
            "answers": transition.answers,
            "unrecognised": transition.unrecognised,
        },
    )
    from worker import metrics

    metrics.platform_transition(transition.platform, transition.state)


def states(session: Session, *, unavailable_only: bool = False) -> list[PlatformState]:
    """Every base URL on record (or only the unavailable ones), by base URL."""
    query = select(PlatformHealth).order_by(PlatformHealth.base_url)
    if unavailable_only:
        query = query.where(PlatformHealth.unavailable_since.is_not(None))
    return [
        PlatformState(
            base_url=row.base_url,
            platform=row.platform,
            unavailable=row.unavailable_since is not None,
            unavailable_since=row.unavailable_since,
            changed_at=row.changed_at,
            window_started_at=row.window_started_at,
            answers=row.answers,
            unrecognised=row.unrecognised,
        )
        for row in session.scalars(query)
    ]


def describe(unavailable: Sequence[PlatformState]) -> str:
    """One sentence for operators (`ogv health`, `ogv status`) about unavailable base URLs."""
    if not unavailable:
        return "every base URL answers like its platform"
    listed = ", ".join(
        f"{s.base_url} ({s.platform}) since {s.unavailable_since:%Y-%m-%d %H:%M} UTC"
        for s in unavailable
        if s.unavailable_since is not None
    )
    return (
        f"unavailable: {listed}; most answers there are not the platform's own, so its "
        "checks end error (unrecognised_answer) and no team's status changes"
    )


__all__ = [
    "PlatformState",
    "State",
    "Tally",
    "Thresholds",
    "Transition",
    "announce",
    "describe",
    "idempotency_key",
    "observe",
    "record",
    "states",
    "tally",
]
