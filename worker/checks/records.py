"""Reading and writing the service's rows. Functions take a session and never commit.

The write rules that make the pipeline idempotent live here:
- a request is finished at most once (a conditional UPDATE on its state);
- a team takes a result only if it is about the key it holds now (`key_version`)
  and no newer result was written before it (`last_checked_at`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    Integration,
    IntegrationStatus,
    OrganizationIntegration,
    Outcome,
    Requester,
    RequestState,
    Team,
    TeamStatus,
    TeamStatusChange,
    ValidationRequest,
    utcnow,
)
from models.crypto import KeyVault
from models.db import from_arrays, one_of
from worker.checks.baseurl import check_allowed
from worker.checks.rules import OPSGENIE_PROVIDER, Result, Target

FINAL_STATES = (RequestState.DONE, RequestState.FAILED)

# The worker's hot path (claim, finish) runs Core statements on the session's
# connection: the ORM's unit of work and bulk helpers cost several times the CPU
# for the same SQL. The executemany UPDATEs take their SET columns from each
# row's keys.
_REQUESTS = cast(Table, ValidationRequest.__table__)
_TEAMS = cast(Table, Team.__table__)
_CHANGES = cast(Table, TeamStatusChange.__table__)
_CLOSE_REQUEST = update(_REQUESTS).where(_REQUESTS.c.id == bindparam("request_id"))
_UPDATE_TEAM = update(_TEAMS).where(_TEAMS.c.id == bindparam("team_id"))


class RecordError(ValueError):
    """Raised when a write is refused; `code` is stable for scripts and the API."""

    code = "invalid"


class NotFound(RecordError):
    """Raised when a referenced organization integration does not exist."""

    code = "not_found"


class DuplicateTeam(RecordError):
    """Raised when a label is already used in the organization integration."""

    code = "duplicate_team"


def add_integration(
    session: Session,
    *,
    organization_id: int,
    account_name: str,
    base_url: str,
    allowed_base_urls: Sequence[str],
) -> tuple[Integration, OrganizationIntegration]:
    """Install an Opsgenie account for an organization; one row per account."""
    url = check_allowed(base_url, allowed_base_urls)
    account = account_name.strip()
    if not account or len(account) > 255 or not account.isprintable():
        raise RecordError("the account name must be 1 to 255 printable characters")
    integration = session.scalars(
        select(Integration).where(
            Integration.provider == OPSGENIE_PROVIDER,
            Integration.account_name == account,
            Integration.base_url == url,
        )
    ).first()
    if integration is None:
        integration = Integration(provider=OPSGENIE_PROVIDER, account_name=account, base_url=url)
        session.add(integration)
        session.flush()
    link = session.scalars(
        select(OrganizationIntegration).where(
            OrganizationIntegration.organization_id == organization_id,
            OrganizationIntegration.integration_id == integration.id,
        )
    ).first()
    if link is None:
        link = OrganizationIntegration(organization_id=organization_id, integration=integration)
        session.add(link)
    link.status = IntegrationStatus.ACTIVE
    session.flush()
    return integration, link


def add_team(
    session: Session,
    *,
    organization_id: int,
    integration_id: int,
    label: str,
    integration_key: str,
    vault: KeyVault,
) -> Team:
    """Store a team's key, encrypted; refuses a label already used in the link."""
    link = find_link(session, organization_id, integration_id)
    if link is None:
        raise NotFound(
            f"integration {integration_id} is not installed for organization {organization_id}"
        )
    check_label(label)
    check_key_format(integration_key)
    team = Team(
        id=Team.make_id(link.id, label),
        organization_integration_id=link.id,
        label=label,
        encrypted_key=vault.encrypt(integration_key),
    )
    try:
        with session.begin_nested():
            session.add(team)
    except IntegrityError as exc:
        raise DuplicateTeam(f"a team labelled {label!r} already exists") from exc
    return team


def find_link(
    session: Session, organization_id: int, integration_id: int
) -> OrganizationIntegration | None:
    return session.scalars(
        select(OrganizationIntegration).where(
            OrganizationIntegration.organization_id == organization_id,
            OrganizationIntegration.integration_id == integration_id,
        )
    ).first()


def check_label(label: str) -> None:
    if not label or len(label) > 255 or not label.isprintable() or label != label.strip():
        raise RecordError(
            "a team label must be 1 to 255 printable characters without surrounding spaces"
        )


def check_key_format(key: str) -> None:
    # Opsgenie keys are UUIDs; we only insist on what an HTTP header can carry.
    if not key or len(key) > 200 or not key.isascii() or not key.isprintable() or " " in key:
        raise RecordError("an integration key must be 1 to 200 visible ASCII characters")


class IdempotencyConflict(RecordError):
    """Raised when an Idempotency-Key was already used for a different team."""

    code = "idempotency_conflict"


@dataclass(frozen=True)
class Ask:
    """Which team a producer wants checked."""

    organization_id: int
    integration_id: int
    team_id: str


def create_request(
    session: Session,
    *,
    organization_id: int,
    integration_id: int,
    team_id: str,
    requested_by: Requester,
    idempotency_key: str | None = None,
) -> tuple[ValidationRequest, bool]:
    """Record a request, or join the team's active one; True when it is new.

    At most one request per team is pending or running (a partial unique index),
    so concurrent producers asking about one team share one check. The same
    `idempotency_key` always returns the same request.
    """
    ask = Ask(organization_id, integration_id, team_id)
    for _ in range(3):
        if idempotency_key is not None:
            earlier = session.scalars(
                select(ValidationRequest).where(
                    ValidationRequest.idempotency_key == idempotency_key
                )
            ).first()
            if earlier is not None:
                if _ask_of(earlier) != ask:
                    raise IdempotencyConflict("that idempotency key was used for another team")
                return earlier, False
        answer = create_requests(
            session, [ask], requested_by=requested_by, idempotency_key=idempotency_key
        ).get(ask)
        if answer is not None:
            return answer
    raise RecordError("could not record the request; try again")


def create_requests(
    session: Session,
    asks: Sequence[Ask],
    *,
    requested_by: Requester,
    batch_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> dict[Ask, tuple[ValidationRequest, bool]]:
    """Record a request per ask in one INSERT, or join the team's active one.

    Returns, per ask, its request and True when the request is new. Asks for a
    team with a check pending or running (an earlier producer's, or a repeat in
    `asks`) get that check. An ask is missing from the answer only when its team's
    active check finished between the INSERT and the look-up, or its
    `idempotency_key` (for a single ask: the column is unique) was taken by
    another team's request meanwhile.
    """
    wanted = list(dict.fromkeys(asks))
    if not wanted:
        return {}
    now = utcnow()
    rows = in_index_order(
        [
            request_row(ask, requested_by, now, idempotency_key=idempotency_key, batch_id=batch_id)
            for ask in wanted
        ]
    )
    # ON CONFLICT DO NOTHING: the partial unique index turns an ask for a team with an
    # active check into a no-op, and RETURNING gives back only the rows inserted.
    inserted = session.scalars(
        insert_skipping_active(session).values(rows).returning(ValidationRequest)
    ).all()
    answers = {_ask_of(request): (request, True) for request in inserted}
    joined = [ask for ask in wanted if ask not in answers]
    if joined:
        for request in _active_requests(session, joined):
            answers.setdefault(_ask_of(request), (request, False))
    return answers


def insert_skipping_active(session: Session, into: Any = ValidationRequest) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a team with an active check is skipped."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(into).on_conflict_do_nothing()
    return sqlite.insert(into).on_conflict_do_nothing()


def insert_pending(session: Session, rows: list[dict[str, Any]], **same: Any) -> None:
    """Insert new requests in bulk, skipping the teams that have an active check.

    `rows` hold what differs between the requests (`organization_id`,
    `integration_id`, `team_id` and any other column), `same` the columns they
    all share (`pending_columns`, say). The dispatcher inserts a page at a time:
    on PostgreSQL one INSERT ... SELECT over one array per column that differs,
    with ids from gen_random_uuid(); elsewhere a Core executemany.
    """
    if not rows:
        return
    ordered = in_index_order(rows)
    skipping = insert_skipping_active(session, _REQUESTS)
    if session.get_bind().dialect.name == "postgresql":
        given = from_arrays(_REQUESTS, ordered, id=func.gen_random_uuid(), **same)
        session.connection().execute(skipping.from_select(*given))
    else:
        session.connection().execute(
            skipping, [{"id": uuid.uuid4(), **row, **same} for row in ordered]
        )


def request_row(ask: Ask, requested_by: Requester, now: datetime, **columns: Any) -> dict[str, Any]:
    """The columns of a new pending request for `ask`, for `insert_skipping_active`."""
    return {
        "id": uuid.uuid4(),
        "organization_id": ask.organization_id,
        "integration_id": ask.integration_id,
        "team_id": ask.team_id,
        **pending_columns(requested_by, now),
        **columns,
    }


def pending_columns(requested_by: Requester, now: datetime) -> dict[str, Any]:
    """The columns every new pending request starts with."""
    return {
        "requested_by": requested_by,
        "state": RequestState.PENDING,
        "attempts": 0,
        "created_at": now,
        "published_at": now,
    }


def in_index_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`request_row`s sorted as the unique index on active requests orders them.

    Every producer inserts in this order: two inserting overlapping teams in
    opposite orders would each wait on the other's uncommitted row (ON CONFLICT
    waits for it) and deadlock.
    """
    return sorted(rows, key=lambda r: (r["organization_id"], r["integration_id"], r["team_id"]))


def _ask_of(request: ValidationRequest) -> Ask:
    return Ask(request.organization_id, request.integration_id, request.team_id)


def _active_requests(session: Session, asks: Sequence[Ask]) -> Sequence[ValidationRequest]:
    return session.scalars(
        select(ValidationRequest).where(
            tuple_(
                ValidationRequest.organization_id,
                ValidationRequest.integration_id,
                ValidationRequest.team_id,
            ).in_([(a.organization_id, a.integration_id, a.team_id) for a in asks]),
            ValidationRequest.state.in_((RequestState.PENDING, RequestState.RUNNING)),
        )
    ).all()


@dataclass(frozen=True)
class Claim:
    """A request claimed for an attempt: what the rules need to resolve it."""

    id: uuid.UUID
    organization_id: int
    integration_id: int
    team_id: str
    attempts: int


def claim_one(session: Session, request_id: uuid.UUID, lease: timedelta) -> list[Claim]:
    """Claim one request for an attempt: nothing if it is already final (or unknown)."""
    return _claim(session, ValidationRequest.id == request_id, lease)


def claim_batch(session: Session, batch_id: uuid.UUID, lease: timedelta) -> list[Claim]:
    """Claim every request of a batch that is not final yet."""
    return _claim(session, ValidationRequest.batch_id == batch_id, lease)


def _claim(session: Session, which: ColumnElement[bool], lease: timedelta) -> list[Claim]:
    """Mark requests running under a lease, and return them: one UPDATE ... RETURNING.

    If the worker dies, the lease lapses and the outbox sweeper publishes the
    request again. `attempts` counts calls made to Opsgenie, so it is written when
    one was made (`note_retry`, `finish_many`), not here. The rows are locked in id
    order (the subquery), so two deliveries of one batch cannot deadlock.
    """
    now = utcnow()
    locked = (
        select(ValidationRequest.id)
        .where(which, ValidationRequest.state.not_in(FINAL_STATES))
        .order_by(ValidationRequest.id)
        .with_for_update()
    )
    columns = _REQUESTS.c
    rows = session.connection().execute(
        update(_REQUESTS)
        .where(columns.id.in_(locked.scalar_subquery()))
        .values(
            state=RequestState.RUNNING,
            started_at=func.coalesce(columns.started_at, now),
            lease_until=now + lease,
            next_attempt_at=None,
        )
        .returning(
            columns.id,
            columns.organization_id,
            columns.integration_id,
            columns.team_id,
            columns.attempts,
        )
    )
    return sorted((Claim(*row) for row in rows), key=lambda claim: claim.id)


def note_retry(
    session: Session, request_id: uuid.UUID, result: Result, attempts: int, delay: float
) -> None:
    """Record a transient failure on a request that will be tried in `delay` seconds."""
    session.execute(
        update(ValidationRequest)
        .where(ValidationRequest.id == request_id, ValidationRequest.state.not_in(FINAL_STATES))
        .values(
            state=RequestState.PENDING,
            message=result.message,
            http_status=result.http_status,
            error_code=result.error_code,
            attempts=attempts,
            lease_until=None,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )
    )


@dataclass(frozen=True)
class Completion:
    """One request's final result, ready to be written."""

    request_id: uuid.UUID
    result: Result
    target: Target | None
    checked_at: datetime
    attempts: int = 0


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
    """What `finish_many` wrote: the requests it finished and the status changes."""

    finished: list[uuid.UUID]
    changes: list[StatusChange]


def finish_many(session: Session, completions: Sequence[Completion]) -> Written:
    """Write final outcomes and the teams' new state in a few bulk statements.

    Requests already final (a duplicate delivery) are skipped and nothing of
    theirs is written. Rows are locked in id order so concurrent batches cannot
    deadlock; the updates go out as one executemany per table.
    """
    by_id = {c.request_id: c for c in completions}
    if not by_id:
        return Written([], [])
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
    connection.execute(_CLOSE_REQUEST, [_closed(c, now) for c in finished])
    changes = _apply_to_teams(connection, [c for c in finished if c.target is not None])
    return Written([c.request_id for c in finished], changes)


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


def _closed(completion: Completion, now: datetime) -> dict[str, Any]:
    """The request's columns once `completion` is written (a bulk UPDATE by id)."""
    result = completion.result
    failed = result.outcome is Outcome.ERROR
    return {
        "request_id": completion.request_id,
        "state": RequestState.FAILED if failed else RequestState.DONE,
        "outcome": result.outcome,
        "message": result.message,
        "http_status": result.http_status,
        "error_code": result.error_code,
        "attempts": completion.attempts,
        "lease_until": None,
        "next_attempt_at": None,
        "finished_at": now,
    }


@dataclass
class _TeamNow:
    """The columns of a team that decide whether a result applies, as it is written."""

    id: str
    key_version: int
    status: TeamStatus
    last_checked_at: datetime | None
    written: dict[str, Any] = field(default_factory=dict)


def _apply_to_teams(connection: Connection, completions: list[Completion]) -> list[StatusChange]:
    targets = sorted({c.target.team_id for c in completions if c.target is not None})
    if not targets:
        return []
    teams = {
        row.id: _TeamNow(row.id, row.key_version, row.status, row.last_checked_at)
        for row in connection.execute(
            select(_TEAMS.c.id, _TEAMS.c.key_version, _TEAMS.c.status, _TEAMS.c.last_checked_at)
            .where(one_of(connection, _TEAMS.c.id, targets))
            .order_by(_TEAMS.c.id)
            .with_for_update()
        )
    }
    changes = []
    for completion in sorted(completions, key=lambda c: c.checked_at):
        assert completion.target is not None
        team = teams.get(completion.target.team_id)
        if team is not None and (change := _apply_to_team(team, completion)) is not None:
            changes.append(change)
    for columns in {frozenset(team.written) for team in teams.values() if team.written}:
        # One executemany per set of columns written (a statement has one SET clause).
        rows = [t.written | {"team_id": t.id} for t in teams.values() if set(t.written) == columns]
        connection.execute(_UPDATE_TEAM, rows)
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
    result, target, checked_at = completion.result, completion.target, completion.checked_at
    assert target is not None
    if team.key_version != target.key_version:
        return None  # the key was replaced while we checked the old one
    if team.last_checked_at is not None and team.last_checked_at > checked_at:
        return None  # a newer check already wrote its answer
    team.written.update(last_error_code=result.error_code, last_http_status=result.http_status)
    if not result.outcome.judges_key:
        return None  # transient failures exhausted: keep the status, record the error
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
