"""Coalescing and the outbox: one active check per team, and none left stranded."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from models import Requester, RequestState, ValidationRequest, utcnow
from models.db import session_factory
from worker.checks import requests
from worker.enqueue import BATCH_TASK, VALIDATE_TASK, request_validations
from worker.periodic import outbox
from worker.settings import Settings


def _submit(
    settings: Settings, team_id: str, key: str | None = None, org: int = 5
) -> tuple[uuid.UUID, bool]:
    with session_factory(settings.effective_database_url).begin() as session:
        request, created = requests.create_request(
            session,
            organization_id=org,
            integration_id=9,
            team_id=team_id,
            requested_by=Requester.API,
            idempotency_key=key,
        )
        return request.id, created


def test_a_second_request_joins_the_active_one(settings: Settings) -> None:
    team = f"1-{uuid.uuid4().hex}"
    first, created = _submit(settings, team)
    again, created_again = _submit(settings, team)
    assert (created, created_again, again) == (True, False, first)


def test_after_the_check_finishes_a_new_one_is_created(settings: Settings) -> None:
    team = f"1-{uuid.uuid4().hex}"
    first, _ = _submit(settings, team)
    with session_factory(settings.effective_database_url).begin() as session:
        session.execute(
            update(ValidationRequest)
            .where(ValidationRequest.id == first)
            .values(state=RequestState.DONE)
        )
    second, created = _submit(settings, team)
    assert created and second != first


def test_an_idempotency_key_returns_the_same_request(settings: Settings) -> None:
    team, key = f"1-{uuid.uuid4().hex}", uuid.uuid4().hex
    first, _ = _submit(settings, team, key)
    with session_factory(settings.effective_database_url).begin() as session:
        session.execute(
            update(ValidationRequest)
            .where(ValidationRequest.id == first)
            .values(state=RequestState.DONE)
        )
    assert _submit(settings, team, key) == (first, False)
    with pytest.raises(requests.IdempotencyConflict):
        _submit(settings, f"1-{uuid.uuid4().hex}", key)


def test_an_idempotency_key_is_its_organizations_own(settings: Settings) -> None:
    """Another organization's same key neither collides with nor returns this one's."""
    key = uuid.uuid4().hex
    mine, _ = _submit(settings, f"1-{uuid.uuid4().hex}", key, org=400)
    theirs, created = _submit(settings, f"2-{uuid.uuid4().hex}", key, org=500)
    assert created and theirs != mine
    with pytest.raises(requests.IdempotencyConflict):
        _submit(settings, f"3-{uuid.uuid4().hex}", key, org=400)


def test_concurrent_requests_for_one_team_make_one_row(settings: Settings) -> None:
    team = f"1-{uuid.uuid4().hex}"
    results: list[tuple[uuid.UUID, bool]] = []
    start = threading.Barrier(40)

    def submit() -> None:
        start.wait()
        results.append(_submit(settings, team))

    threads = [threading.Thread(target=submit) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({request_id for request_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with session_factory(settings.effective_database_url)() as session:
        count = session.scalar(select(func.count()).where(ValidationRequest.team_id == team))
    assert count == 1


def _age(settings: Settings, request_id: uuid.UUID, **values: object) -> None:
    with session_factory(settings.effective_database_url).begin() as session:
        session.execute(
            update(ValidationRequest).where(ValidationRequest.id == request_id).values(**values)
        )


def test_the_sweeper_republishes_stranded_requests_only(settings: Settings) -> None:
    sessions = session_factory(settings.effective_database_url)
    long_ago = utcnow() - timedelta(minutes=10)
    fresh, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    unpublished, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    _age(settings, unpublished, published_at=long_ago)
    waiting_retry, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    _age(
        settings,
        waiting_retry,
        published_at=long_ago,
        next_attempt_at=utcnow() + timedelta(minutes=1),
    )
    dead_worker, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    _age(settings, dead_worker, state=RequestState.RUNNING, lease_until=long_ago)
    live_worker, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    _age(
        settings,
        live_worker,
        state=RequestState.RUNNING,
        lease_until=utcnow() + timedelta(minutes=1),
    )
    done, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    _age(settings, done, state=RequestState.DONE, published_at=long_ago)

    published: list[uuid.UUID] = []
    outbox.sweep(sessions, published.append, timedelta(minutes=1), limit=10_000)

    ours = {fresh, unpublished, waiting_retry, dead_worker, live_worker, done}
    assert {p for p in published if p in ours} == {unpublished, dead_worker}
    with sessions() as session:
        row = session.get(ValidationRequest, dead_worker)
        assert row is not None and row.state is RequestState.PENDING and row.lease_until is None
    published.clear()
    outbox.sweep(sessions, published.append, timedelta(minutes=1), limit=10_000)
    assert not ours & set(published)  # just published: not stranded again yet


def test_stranded_requests_of_a_batch_go_back_as_one_batch_message(settings: Settings) -> None:
    sessions = session_factory(settings.effective_database_url)
    long_ago = utcnow() - timedelta(minutes=10)
    batch = uuid.uuid4()
    in_batch = [_submit(settings, f"1-{uuid.uuid4().hex}")[0] for _ in range(3)]
    alone, _ = _submit(settings, f"1-{uuid.uuid4().hex}")
    for request_id in in_batch:
        _age(settings, request_id, published_at=long_ago, batch_id=batch)
    _age(settings, alone, published_at=long_ago)

    singles: list[uuid.UUID] = []
    batches: list[uuid.UUID] = []
    count = outbox.sweep(
        sessions, singles.append, timedelta(minutes=1), limit=10_000, publish_batch=batches.append
    )

    assert count >= 4
    assert batches.count(batch) == 1
    assert alone in singles and not set(in_batch) & set(singles)


class _Published:
    """Stands in for a Celery app: records what would be published."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str]]] = []

    def send_task(self, name: str, args: list[str], **_: object) -> None:
        self.messages.append((name, args))


def test_many_asks_are_recorded_together_as_one_batch(settings: Settings) -> None:
    active = f"1-{uuid.uuid4().hex}"
    earlier, _ = _submit(settings, active)
    fresh = [f"1-{uuid.uuid4().hex}" for _ in range(3)]
    asks = [requests.Ask(5, 9, team) for team in [*fresh, active, fresh[0]]]
    batch = uuid.uuid4()
    with session_factory(settings.effective_database_url).begin() as session:
        answers = requests.create_requests(
            session, asks, requested_by=Requester.API, batch_id=batch
        )
        got = {
            ask.team_id: (request.id, request.batch_id, created)
            for ask, (request, created) in answers.items()
        }

    assert got[active] == (earlier, None, False)  # joined, not queued again
    assert [got[team][1:] for team in fresh] == [(batch, True)] * 3
    assert len({got[team][0] for team in fresh}) == 3
    with session_factory(settings.effective_database_url)() as session:
        rows = session.scalar(
            select(func.count()).where(ValidationRequest.team_id.in_([*fresh, active]))
        )
    assert rows == 4  # the repeated ask made no second row


def test_new_requests_asked_together_go_out_as_one_message(settings: Settings) -> None:
    sessions = session_factory(settings.effective_database_url)
    joined = f"1-{uuid.uuid4().hex}"
    _submit(settings, joined)
    fresh = [f"1-{uuid.uuid4().hex}" for _ in range(3)]
    app = _Published()

    submitted = request_validations(
        sessions,
        app,  # type: ignore[arg-type]
        [requests.Ask(5, 9, team) for team in [*fresh, joined]],
        requested_by=Requester.API,
    )
    alone = request_validations(
        sessions,
        app,  # type: ignore[arg-type]
        [requests.Ask(5, 9, f"1-{uuid.uuid4().hex}"), requests.Ask(5, 9, joined)],
        requested_by=Requester.API,
    )
    nothing_new = request_validations(
        sessions,
        app,  # type: ignore[arg-type]
        [requests.Ask(5, 9, joined)],
        requested_by=Requester.API,
    )

    batch_ids = {s.view.id: s for s in submitted.values() if s.created}
    with sessions() as session:
        batch = {
            session.get(ValidationRequest, uuid.UUID(request_id)).batch_id  # type: ignore[union-attr]
            for request_id in batch_ids
        }
    [new_alone] = [s for s in alone.values() if s.created]
    assert len(batch_ids) == 3 and len(batch) == 1 and None not in batch
    assert not nothing_new[requests.Ask(5, 9, joined)].created
    assert app.messages == [
        (BATCH_TASK, [str(batch.pop())]),  # three new requests, one message
        (VALIDATE_TASK, [new_alone.view.id]),  # one new request: a plain check
    ]


def test_groups_of_overlapping_teams_recorded_at_once_do_not_deadlock(settings: Settings) -> None:
    # Two producers record the same teams at the same moment, in opposite orders.
    # Inserted as given, each would wait on the other's uncommitted rows.
    sessions = session_factory(settings.effective_database_url)
    errors: list[BaseException] = []

    def record(asks: list[requests.Ask], start: threading.Barrier) -> None:
        start.wait()
        try:
            with sessions.begin() as session:
                requests.create_requests(session, asks, requested_by=Requester.API)
        except BaseException as exc:  # a deadlock is an OperationalError
            errors.append(exc)

    for _ in range(15):
        asks = [requests.Ask(5, 9, f"1-{uuid.uuid4().hex}") for _ in range(40)]
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=record, args=(order, start))
            for order in (asks, list(reversed(asks)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
