"""Writing a check's outcome to its request and team; functions never commit.

The write rules that make the pipeline idempotent live here:
- a request is finished at most once (a conditional UPDATE on its state);
- a team takes a result only if it is about the key it holds now (`key_version`)
  and no newer result was written before it (`last_checked_at`).

Every row written here is `fit` to its columns first: text is stripped of control
characters and cut to the column's length, an integer out of its column's range
is dropped. Values from upstream are `scrub`bed and bounded long before
(`worker.checks.opsgenie`); this is the last line, so that a field added later, or
a bound that drifts from its column, cannot make a write fail.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import (
    FAILING_VERDICTS,
    HeldChange,
    Outcome,
    RequestState,
    Team,
    TeamStatus,
    TeamStatusChange,
    ValidationRequest,
    utcnow,
)
from models.db import from_arrays, one_of
from models.integration import JSM_FAILS, JSM_WORKS
from worker.checks.guard import Guard, Trip, Windows
from worker.checks.requests import FINAL_STATES
from worker.checks.rules import Result, Target

# The worker's hot path (claim, finish) runs Core statements on the session's
# connection: the ORM's unit of work and bulk helpers cost several times the CPU
# for the same SQL. The executemany UPDATEs take their SET columns from each
# row's keys.
_REQUESTS = cast(Table, ValidationRequest.__table__)
_TEAMS = cast(Table, Team.__table__)
_CHANGES = cast(Table, TeamStatusChange.__table__)
_HELD = cast(Table, HeldChange.__table__)
_CLOSE_REQUEST = update(_REQUESTS).where(_REQUESTS.c.id == bindparam("request_id"))
_UPDATE_TEAM = update(_TEAMS).where(_TEAMS.c.id == bindparam("team_id"))

TEXT_LIMIT = 2000
"""The most characters kept in a text column without a declared length (a request's
`message`): our own sentences plus Opsgenie's message (500) fit several times over."""
INT32 = range(-(2**31), 2**31)
"""What an `Integer` column holds on PostgreSQL (SQLite holds more)."""


@dataclass(frozen=True)
class Completion:
    """One request's final result, ready to be written."""

    request_id: uuid.UUID
    result: Result
    target: Target | None
    checked_at: datetime
    attempts: int = 0
    confirming: Outcome | None = None
    """The first failing verdict this check must confirm, when it is a second check."""


@dataclass(frozen=True)
class StatusChange:
    """A row written to the status history (`models.TeamStatusChange`)."""

    id: int
    team_id: str
    request_id: uuid.UUID
    old_status: TeamStatus
    new_status: TeamStatus
    changed_at: datetime


@dataclass(frozen=True)
class Written:
    """What `finish_many` wrote: the requests it finished and the status changes, and
    what confirmation and the mass-change guard made of the failing verdicts."""

    finished: list[uuid.UUID]
    changes: list[StatusChange]
    confirming: list[uuid.UUID] = field(default_factory=list)
    """Requests now `confirming`: their second check is due in `Guard.confirm_after`."""
    confirmations: dict[uuid.UUID, str] = field(default_factory=dict)
    """Second checks that answered: request id → `confirmed` or `disagreed`."""
    held: list[uuid.UUID] = field(default_factory=list)
    """Finished requests whose confirmed change the guard held (the team kept `valid`)."""
    trips: list[Trip] = field(default_factory=list)
    """Base URLs whose guard these writes tripped: to be announced once committed."""
    second_checks: list[uuid.UUID] = field(default_factory=list)
    """The batches the `confirming` requests were put in, to publish after the delay."""

    def extend(self, other: Written) -> None:
        """Add what another transaction wrote (writes made one by one)."""
        self.finished.extend(other.finished)
        self.changes.extend(other.changes)
        self.confirming.extend(other.confirming)
        self.confirmations.update(other.confirmations)
        self.held.extend(other.held)
        self.trips.extend(other.trips)
        self.second_checks.extend(other.second_checks)


HELD_NOTE = (
    " The change is held: the mass-change guard of {base_url} has tripped, and the team "
    "keeps `valid` until an operator releases it (`ogv changes release`)."
)


def finish_many(
    session: Session, completions: Sequence[Completion], guard: Guard | None = None
) -> Written:
    """Write final outcomes and the teams' new state in a few bulk statements.

    Requests already final (a duplicate delivery) are skipped and nothing of
    theirs is written. Rows are locked in id order so concurrent batches cannot
    deadlock; the updates go out as one executemany per table.

    With a `guard`, a failing verdict about a valid team waits for its second check
    (the request turns `confirming`), and a confirmed one passes the mass-change
    guard, which may hold it (`worker/checks/guard.py`).
    """
    by_id = {c.request_id: c for c in completions}
    if not by_id:
        return Written([], [])
    guard = guard or Guard()
    connection = session.connection()
    open_ids = connection.scalars(
        select(_REQUESTS.c.id)
        .where(one_of(session, _REQUESTS.c.id, by_id), _REQUESTS.c.state.not_in(FINAL_STATES))
        .order_by(_REQUESTS.c.id)
        .with_for_update()
    ).all()
    finished = [by_id[request_id] for request_id in open_ids]
    if not finished:
        return Written([], [])
    now = utcnow()
    applied = _apply_to_teams(connection, [c for c in finished if c.target is not None], guard)
    waiting = {c.request_id for c in applied.confirming}
    closing = [c for c in finished if c.request_id not in waiting]
    if closing:
        held = {c.request_id for c in applied.held}
        rows = [_closed(c, now, applied.confirmations.get(c.request_id), held) for c in closing]
        connection.execute(_CLOSE_REQUEST, rows)
    second_checks = None
    if applied.confirming:
        # The second checks go out together, as a batch of their own: one message, and
        # every account's turns booked at once.
        due, second_checks = now + timedelta(seconds=guard.confirm_after), uuid.uuid4()
        rows = [_confirming(c, due, second_checks) for c in applied.confirming]
        connection.execute(_CLOSE_REQUEST, rows)
    return Written(
        [c.request_id for c in closing],
        applied.changes,
        sorted(waiting),
        applied.confirmations,
        [c.request_id for c in applied.held],
        applied.trips,
        [second_checks] if second_checks else [],
    )


def finish(
    session: Session,
    request_id: uuid.UUID,
    result: Result,
    target: Target | None,
    checked_at: datetime,
    attempts: int = 0,
) -> bool:
    """Write one request's final outcome; False if it had been finished before."""
    written = finish_many(session, [Completion(request_id, result, target, checked_at, attempts)])
    return bool(written.finished)


def fit(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as the columns of `table` can hold them, whatever their source.

    Text is stripped of control characters and cut to its column's length
    (`TEXT_LIMIT` when the column declares none); an integer out of its column's
    range becomes NULL where the column allows it. Enum members, other types, and
    names that are no column of `table` (bind parameters such as `team_id`) pass
    unchanged.
    """
    fitters = _fitters(table)
    return {
        name: value if (fitter := fitters.get(name)) is None else fitter(value)
        for name, value in values.items()
    }


@functools.cache
def _fitters(table: Table) -> dict[str, Callable[[Any], Any]]:
    """For each column of `table` that a value can overflow, what makes a value fit it
    (worked out once per table: `fit` runs on the hot path, once per row written)."""
    fitters: dict[str, Callable[[Any], Any]] = {}
    for column in table.columns:
        kind = column.type
        if isinstance(kind, String):  # Text, and String(n); an Enum's values are members
            fitters[column.name] = functools.partial(_fit_text, limit=kind.length or TEXT_LIMIT)
        elif isinstance(kind, Integer) and not isinstance(kind, BigInteger) and column.nullable:
            fitters[column.name] = _fit_int32
    return fitters


def _fit_text(value: Any, limit: int) -> Any:
    if isinstance(value, str) and not isinstance(value, enum.Enum):
        return printable(value)[:limit]
    return value


def _fit_int32(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value not in INT32:
        return None
    return value


def printable(text: str) -> str:
    """`text` without control characters: a newline would forge a log line, and
    PostgreSQL refuses a NUL in any text column."""
    return text if text.isprintable() else "".join(ch for ch in text if ch.isprintable())


def fitted(result: Result) -> Result:
    """`result` with each field cut as its request column will hold it, so that what
    is logged about a check is what is stored."""
    fields = fit(
        _REQUESTS,
        {
            "message": result.message,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "rate_limit_state": result.rate_limit_state,
            "rate_limit_reason": result.rate_limit_reason,
        },
    )
    if all(value is getattr(result, name) for name, value in fields.items()):
        return result  # the usual case, and cheaper than a copy
    return dataclasses.replace(result, **fields)


def _closed(
    completion: Completion, now: datetime, confirmation: str | None, held: set[uuid.UUID]
) -> dict[str, Any]:
    """The request's columns once `completion` is written (a bulk UPDATE by id)."""
    result = completion.result
    failed = result.outcome is Outcome.ERROR
    message = result.message
    if completion.request_id in held and completion.target is not None:
        message += HELD_NOTE.format(base_url=completion.target.base_url)
    return fit(
        _REQUESTS,
        {
            "request_id": completion.request_id,
            "state": RequestState.FAILED if failed else RequestState.DONE,
            "outcome": result.outcome,
            "message": message,
            "confirmation": confirmation,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "works_on": ",".join(result.works_on) or None,
            "rate_limit_state": result.rate_limit_state,
            "rate_limit_reason": result.rate_limit_reason,
            "attempts": completion.attempts,
            "lease_until": None,
            "next_attempt_at": None,
            "finished_at": now,
        },
    )


def _confirming(completion: Completion, due: datetime, batch_id: uuid.UUID) -> dict[str, Any]:
    """The request's columns while its failing verdict waits for a second check, due
    at `due` in batch `batch_id`. Its attempts start again: the second check is a
    check of its own."""
    result = completion.result
    return fit(
        _REQUESTS,
        {
            "request_id": completion.request_id,
            "state": RequestState.CONFIRMING,
            "confirming_outcome": result.outcome,
            "message": f"{result.message} A second check at {due:%H:%M:%S} UTC must agree "
            "before the team's status changes.",
            "http_status": result.http_status,
            "error_code": result.error_code,
            "attempts": 0,
            "lease_until": None,
            "next_attempt_at": due,
            "batch_id": batch_id,
        },
    )


@dataclass
class _TeamNow:
    """The columns of a team that decide whether a result applies, as it is written."""

    id: str
    key_version: int
    status: TeamStatus
    last_checked_at: datetime | None
    written: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Applied:
    """What the teams' side of `finish_many` decided and wrote."""

    changes: list[StatusChange] = field(default_factory=list)
    confirming: list[Completion] = field(default_factory=list)
    confirmations: dict[uuid.UUID, str] = field(default_factory=dict)
    held: list[Completion] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)


@dataclass
class _Waiting:
    """Verdicts about valid teams, counted per base URL for the mass-change guard, and
    the failing ones that wait for its admission."""

    checks: Counter[str] = field(default_factory=Counter)
    held: dict[str, list[tuple[_TeamNow, Completion]]] = field(default_factory=dict)


def _apply_to_teams(
    connection: Connection, completions: list[Completion], guard: Guard
) -> _Applied:
    """Write each completion to its team, oldest check first: unless it is stale, waits
    for its second check, or waits for (and is refused by) the mass-change guard."""
    teams = _lock_teams(connection, completions)
    if teams is None:
        return _Applied()
    applied, waiting = _Applied(), _Waiting()
    changes: list[dict[str, Any]] = []
    for completion in sorted(completions, key=lambda c: c.checked_at):
        assert completion.target is not None
        team = teams.get(completion.target.team_id)
        if team is None or _stale(team, completion):
            continue
        if _applies_now(team, completion, guard, applied, waiting):
            changes.extend(_changed(team, completion))
    if guard.windows is not None:
        changes.extend(_admit(connection, guard.windows, guard, waiting, applied))
        _settle_held(connection, teams, completions, applied.held)
    _write_teams(connection, teams)
    applied.changes = insert_changes(connection, changes)
    return applied


def _lock_teams(
    connection: Connection, completions: list[Completion]
) -> dict[str, _TeamNow] | None:
    """The completions' teams, locked in id order (None: no completion has a team)."""
    targets = sorted({c.target.team_id for c in completions if c.target is not None})
    if not targets:
        return None
    return {
        row.id: _TeamNow(row.id, row.key_version, row.status, row.last_checked_at)
        for row in connection.execute(
            select(_TEAMS.c.id, _TEAMS.c.key_version, _TEAMS.c.status, _TEAMS.c.last_checked_at)
            .where(one_of(connection, _TEAMS.c.id, targets))
            .order_by(_TEAMS.c.id)
            .with_for_update()
        )
    }


def _applies_now(
    team: _TeamNow, completion: Completion, guard: Guard, applied: _Applied, waiting: _Waiting
) -> bool:
    """True when `completion` is written to `team` now. Otherwise it waits for its
    second check (`applied.confirming`), for the guard (`waiting.held`), or is a second
    opinion that disagreed; a second opinion's verdict goes in `applied.confirmations`."""
    assert completion.target is not None
    outcome, first = completion.result.outcome, completion.confirming
    if first is not None and outcome.judges_key:
        applied.confirmations[completion.request_id] = (
            "confirmed" if outcome is first else "disagreed"
        )
    if team.status is not TeamStatus.VALID or not outcome.judges_key:
        return True
    if outcome in FAILING_VERDICTS and first is None and guard.confirm_after > 0:
        applied.confirming.append(completion)  # not a check yet: its second is
        return False
    base_url = completion.target.base_url
    waiting.checks[base_url] += 1
    if outcome not in FAILING_VERDICTS:
        return True
    if first is not None and outcome is not first:
        return False  # a second opinion that disagrees changes nothing yet
    if guard.windows is not None:
        waiting.held.setdefault(base_url, []).append((team, completion))
        return False
    return True


def _admit(
    connection: Connection, windows: Windows, guard: Guard, waiting: _Waiting, applied: _Applied
) -> list[dict[str, Any]]:
    """Ask the guard, per base URL, how many of its waiting failing verdicts may be
    written; write those, and hold the rest (`applied.held`, `applied.trips`)."""
    changes: list[dict[str, Any]] = []
    for base_url in sorted(waiting.checks):
        queued = waiting.held.get(base_url, [])
        admission = windows.admit(
            connection,
            base_url,
            guard.thresholds,
            waiting.checks[base_url],
            [completion.target.account for _, completion in queued if completion.target],
        )
        applied.trips.extend([admission.trip] if admission.trip else [])
        for team, completion in queued[: admission.allowed]:
            changes.extend(_changed(team, completion))
        applied.held.extend(completion for _, completion in queued[admission.allowed :])
    return changes


def _changed(team: _TeamNow, completion: Completion) -> list[dict[str, Any]]:
    """Write `completion` to `team`: its status change, if any, as a history row."""
    change = _apply_to_team(team, completion)
    return [] if change is None else [change]


def _stale(team: _TeamNow, completion: Completion) -> bool:
    """True when `completion` must not touch `team`: it checked a key since replaced,
    or a newer check already wrote its answer."""
    assert completion.target is not None
    if team.key_version != completion.target.key_version:
        return True
    return team.last_checked_at is not None and team.last_checked_at > completion.checked_at


def _settle_held(
    connection: Connection,
    teams: dict[str, _TeamNow],
    completions: list[Completion],
    held: list[Completion],
) -> None:
    """Keep the evidence of each change the guard held (one row per team, the latest),
    and drop the held change of every team whose key was just judged otherwise: a
    re-check that found it valid, or a change that was written after all."""
    holding = {c.target.team_id for c in held if c.target is not None}
    judged = sorted(
        c.target.team_id
        for c in completions
        if c.target is not None
        and c.result.outcome.judges_key
        and c.target.team_id not in holding
        and c.target.team_id in teams
        and "last_checked_at" in teams[c.target.team_id].written
    )
    if judged:
        connection.execute(delete(_HELD).where(one_of(connection, _HELD.c.team_id, judged)))
    if not held:
        return
    rows = [_held_row(teams[c.target.team_id], c) for c in held if c.target is not None]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_HELD)
    replaced = {name: statement.excluded[name] for name in rows[0] if name != "team_id"}
    connection.execute(
        statement.on_conflict_do_update(index_elements=["team_id"], set_=replaced), rows
    )


def _held_row(team: _TeamNow, completion: Completion) -> dict[str, Any]:
    result, target = completion.result, completion.target
    assert target is not None
    return fit(
        _HELD,
        {
            "team_id": team.id,
            "request_id": completion.request_id,
            "base_url": target.base_url,
            "account": target.account,
            "key_version": target.key_version,
            "old_status": team.status,
            "new_status": TeamStatus(result.outcome.value),
            "http_status": result.http_status,
            "error_code": result.error_code,
            "message": result.message,
            "held_at": completion.checked_at,
            "rechecked_at": None,
        },
    )


def _write_teams(connection: Connection, teams: dict[str, _TeamNow]) -> None:
    for columns in {frozenset(team.written) for team in teams.values() if team.written}:
        # One executemany per set of columns written (a statement has one SET clause).
        rows = [
            fit(_TEAMS, t.written | {"team_id": t.id})
            for t in teams.values()
            if set(t.written) == columns
        ]
        connection.execute(_UPDATE_TEAM, rows)


def insert_changes(connection: Connection, changes: list[dict[str, Any]]) -> list[StatusChange]:
    """Write history rows (`team_id`, `request_id`, `old_status`, `new_status`,
    `changed_at` each) and return them with their ids, in id order."""
    if not changes:
        return []
    # INSERT ... RETURNING: the rows come back with their ids. (A SELECT after the
    # INSERT would scan the history table whenever its statistics say it is small.)
    returned = (
        _CHANGES.c.id,
        _CHANGES.c.team_id,
        _CHANGES.c.request_id,
        _CHANGES.c.old_status,
        _CHANGES.c.new_status,
        _CHANGES.c.changed_at,
    )
    if connection.dialect.name == "postgresql":
        inserted = connection.execute(
            insert(_CHANGES).from_select(*from_arrays(_CHANGES, changes)).returning(*returned)
        )
    else:
        inserted = connection.execute(insert(_CHANGES).returning(*returned), changes)
    return sorted((StatusChange(*row) for row in inserted), key=lambda change: change.id)


def _apply_to_team(team: _TeamNow, completion: Completion) -> dict[str, Any] | None:
    result, checked_at = completion.result, completion.checked_at
    team.written.update(last_error_code=result.error_code, last_http_status=result.http_status)
    if result.jsm_ops in (JSM_WORKS, JSM_FAILS):
        # Only a verdict: a JSM probe that got no genuine answer keeps what was known.
        team.written.update(jsm_ops=result.jsm_ops, jsm_ops_checked_at=checked_at)
    if not result.outcome.judges_key:
        return None  # transient failures exhausted: keep the status, record the error
    if result.works_on or result.outcome is not Outcome.INVALID_KEY:
        # A re-check of a key still invalid looks nowhere else: it keeps what was found.
        team.written["works_on"] = ",".join(result.works_on) or None
    new_status = TeamStatus(result.outcome.value)
    team.last_checked_at = checked_at
    team.written["last_checked_at"] = checked_at
    if new_status == team.status:
        return None
    change = {
        "team_id": team.id,
        "request_id": completion.request_id,
        "old_status": team.status,
        "new_status": new_status,
        "changed_at": checked_at,
    }
    team.status = new_status
    team.written.update(status=new_status, status_changed_at=checked_at)
    return change
