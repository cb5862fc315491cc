"""Reading and writing the service's rows. Functions take a session and never commit.

The write rules that make the pipeline idempotent live here:
- a request is finished at most once (a conditional UPDATE on its state);
- a team takes a result only if it is about the key it holds now (`key_version`)
  and no newer result was written before it (`last_checked_at`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, insert, select, update
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
from worker.baseurl import check_allowed
from worker.rules import OPSGENIE_PROVIDER, Result, Target

FINAL_STATES = (RequestState.DONE, RequestState.FAILED)


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
    wanted = (organization_id, integration_id, team_id)
    if idempotency_key is not None:
        earlier = session.scalars(
            select(ValidationRequest).where(ValidationRequest.idempotency_key == idempotency_key)
        ).first()
        if earlier is not None:
            if (earlier.organization_id, earlier.integration_id, earlier.team_id) != wanted:
                raise IdempotencyConflict("that idempotency key was used for another team")
            return earlier, False
    for _ in range(3):
        active = _active_request(session, *wanted)
        if active is not None:
            return active, False
        request = ValidationRequest(
            organization_id=organization_id,
            integration_id=integration_id,
            team_id=team_id,
            requested_by=requested_by,
            state=RequestState.PENDING,
            attempts=0,
            idempotency_key=idempotency_key,
            published_at=utcnow(),
        )
        try:
            with session.begin_nested():
                session.add(request)
        except IntegrityError:
            continue  # another producer won the race: join its request
        return request, True
    raise RecordError("could not record the request; try again")


def _active_request(
    session: Session, organization_id: int, integration_id: int, team_id: str
) -> ValidationRequest | None:
    return session.scalars(
        select(ValidationRequest).where(
            ValidationRequest.organization_id == organization_id,
            ValidationRequest.integration_id == integration_id,
            ValidationRequest.team_id == team_id,
            ValidationRequest.state.in_((RequestState.PENDING, RequestState.RUNNING)),
        )
    ).first()


def claim_one(session: Session, request_id: uuid.UUID, lease: timedelta) -> list[ValidationRequest]:
    """Claim one request for an attempt: nothing if it is already final (or unknown)."""
    return _claim(session, ValidationRequest.id == request_id, lease)


def claim_batch(session: Session, batch_id: uuid.UUID, lease: timedelta) -> list[ValidationRequest]:
    """Claim every request of a batch that is not final yet."""
    return _claim(session, ValidationRequest.batch_id == batch_id, lease)


def _claim(
    session: Session, which: ColumnElement[bool], lease: timedelta
) -> list[ValidationRequest]:
    """Mark requests running under a lease, and return them.

    If the worker dies, the lease lapses and the outbox sweeper publishes the
    request again. `attempts` counts calls made to Opsgenie, so it is written when
    one was made (`note_retry`, `finish_many`), not here.
    """
    requests = list(
        session.scalars(
            select(ValidationRequest)
            .where(which, ValidationRequest.state.not_in(FINAL_STATES))
            .order_by(ValidationRequest.id)
            .with_for_update()
        )
    )
    now = utcnow()
    for request in requests:
        request.state = RequestState.RUNNING
        request.started_at = request.started_at or now
        request.lease_until = now + lease
        request.next_attempt_at = None
    session.flush()
    return requests


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
class Written:
    """What `finish_many` wrote: the requests it finished and the status changes."""

    finished: list[uuid.UUID]
    changes: list[TeamStatusChange]


def finish_many(session: Session, completions: Sequence[Completion]) -> Written:
    """Write final outcomes and the teams' new state in a few bulk statements.

    Requests already final (a duplicate delivery) are skipped and nothing of
    theirs is written. Rows are locked in id order so concurrent batches cannot
    deadlock; the ORM flushes the changes as executemany statements.
    """
    by_id = {c.request_id: c for c in completions}
    requests = session.scalars(
        select(ValidationRequest)
        .where(ValidationRequest.id.in_(by_id), ValidationRequest.state.not_in(FINAL_STATES))
        .order_by(ValidationRequest.id)
        .with_for_update()
    ).all()
    now = utcnow()
    for request in requests:
        _close(request, by_id[request.id], now)
    finished = [by_id[request.id] for request in requests]
    changes = _apply_to_teams(session, [c for c in finished if c.target is not None])
    session.flush()
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


def _close(request: ValidationRequest, completion: Completion, now: datetime) -> None:
    result = completion.result
    failed = result.outcome is Outcome.ERROR
    request.state = RequestState.FAILED if failed else RequestState.DONE
    request.outcome = result.outcome
    request.message = result.message
    request.http_status = result.http_status
    request.error_code = result.error_code
    request.attempts = completion.attempts
    request.lease_until = None
    request.next_attempt_at = None
    request.finished_at = now


def _apply_to_teams(session: Session, completions: list[Completion]) -> list[TeamStatusChange]:
    targets = sorted({c.target.team_id for c in completions if c.target is not None})
    if not targets:
        return []
    teams = {
        team.id: team
        for team in session.scalars(
            select(Team).where(Team.id.in_(targets)).order_by(Team.id).with_for_update()
        )
    }
    changes = []
    for completion in sorted(completions, key=lambda c: c.checked_at):
        assert completion.target is not None
        team = teams.get(completion.target.team_id)
        if team is not None and (change := _apply_to_team(team, completion)) is not None:
            changes.append(change)
    if not changes:
        return []
    # One multi-row INSERT ... RETURNING: the rows come back with their ids. (The ORM
    # would insert row by row to learn each id; a SELECT after the INSERT would scan
    # the history table whenever its statistics say it is small.)
    inserted = session.scalars(insert(TeamStatusChange).returning(TeamStatusChange), changes)
    return sorted(inserted, key=lambda change: change.id)


def _apply_to_team(team: Team, completion: Completion) -> dict[str, Any] | None:
    result, target, checked_at = completion.result, completion.target, completion.checked_at
    assert target is not None
    if team.key_version != target.key_version:
        return None  # the key was replaced while we checked the old one
    if team.last_checked_at is not None and team.last_checked_at > checked_at:
        return None  # a newer check already wrote its answer
    team.last_error_code = result.error_code
    team.last_http_status = result.http_status
    if not result.outcome.judges_key:
        return None  # transient failures exhausted: keep the status, record the error
    new_status = TeamStatus(result.outcome.value)
    team.last_checked_at = checked_at
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
    team.status_changed_at = checked_at
    return change
