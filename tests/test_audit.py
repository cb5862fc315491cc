"""The audit log (worker/audit.py): recorded in the action's transaction, read newest
first a page at a time, filtered, and limited to a caller's organizations."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from models import AuditEvent, utcnow
from models.db import session_factory
from worker import audit


def an_org() -> int:
    return uuid.uuid4().int % 10**12 + 1


def test_an_event_is_written_with_its_action_or_not_at_all(database_url: str) -> None:
    org = an_org()
    sessions = session_factory(database_url)
    with pytest.raises(RuntimeError), sessions.begin() as session:
        audit.record(session, "cli:alice", "team.add", organization_id=org, target="1-ops")
        raise RuntimeError("the action failed")  # rolls the event back with it
    with sessions.begin() as session:
        audit.record(
            session,
            "cli:alice",
            "team.add",
            organization_id=org,
            target="1-ops",
            details={"integration_id": 5},
        )

    with sessions() as session:
        found = audit.page(session, audit.Query(organization_id=org))
    assert [(e.actor, e.action, e.organization_id, e.target, e.details) for e in found.events] == [
        ("cli:alice", "team.add", org, "1-ops", {"integration_id": 5})
    ]
    assert found.next_cursor is None


def test_an_unknown_action_is_a_bug(database_url: str) -> None:
    with session_factory(database_url)() as session, pytest.raises(ValueError):
        audit.record(session, "cli:alice", "team.removed")


def test_pages_go_newest_first_and_meet_end_to_end(database_url: str) -> None:
    org = an_org()
    sessions = session_factory(database_url)
    for n in range(5):
        with sessions.begin() as session:
            audit.record(session, "token:app", "team.add", organization_id=org, target=str(n))

    targets: list[str | None] = []
    cursor: str | None = None
    while True:
        before = int(cursor) if cursor else None
        with sessions() as session:
            found = audit.page(session, audit.Query(organization_id=org, limit=2, before=before))
        targets += [e.target for e in found.events]
        cursor = found.next_cursor
        if cursor is None:
            break
    assert targets == ["4", "3", "2", "1", "0"]


def test_filters_by_action_and_time_and_a_callers_organizations(database_url: str) -> None:
    mine, theirs = an_org(), an_org()
    sessions = session_factory(database_url)
    with sessions.begin() as session:
        audit.record(session, "cli:ops", "integration.add", organization_id=mine, target="1")
        audit.record(session, "cli:ops", "team.add", organization_id=mine, target="2")
        audit.record(session, "cli:ops", "team.add", organization_id=theirs, target="3")
        audit.record(session, "cli:ops", "keys.rotate")  # of no organization
    since = utcnow() - timedelta(minutes=1)

    def targets(query: audit.Query) -> list[str | None]:
        with sessions() as session:
            return [e.target for e in audit.page(session, query).events]

    limited = frozenset({mine})
    assert targets(audit.Query(organizations=limited, since=since)) == ["2", "1"]
    assert targets(audit.Query(organizations=limited, action="team.add")) == ["2"]
    assert targets(audit.Query(organization_id=theirs, organizations=limited)) == []
    assert targets(audit.Query(organization_id=theirs)) == ["3"]
    assert targets(audit.Query(since=utcnow() + timedelta(minutes=1))) == []
    with sessions() as session:
        rotations = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "keys.rotate")
        )
    assert rotations and rotations >= 1


def test_the_cli_actor_names_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "alice")
    monkeypatch.setenv("USER", "alice")
    assert audit.cli_actor() == "cli:alice"
