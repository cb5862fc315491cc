"""The requests' retention (OGV_REQUEST_RETENTION_DAYS), on SQLite and PostgreSQL.

What it keeps, how a pass goes on across runs, what the API says about a pruned id,
and, on PostgreSQL with a year of a fleet's requests, that every page's work is the
same from the first to the last: each page is a range scan of one index and a few
index probes per row, counted from the plans (never timed: bench/prune.py times it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Executable, insert, make_url, select
from sqlalchemy.orm import Session

from models import (
    HeldChange,
    Requester,
    RequestState,
    RetentionMark,
    TeamStatus,
    TeamStatusChange,
    ValidationRequest,
    utcnow,
)
from models.crypto import KeyVault
from models.db import session_factory
from models.ids import new_request_id
from models.validation import REQUESTS_RETENTION
from tests.support import databases
from worker import inventory
from worker.enqueue import expired
from worker.periodic.retention import (
    cursor_of,
    page_of_requests,
    prune_requests,
    prune_requests_page,
    unkept,
)

DAY = timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with databases.own_database(request.param, postgres, tmp_path) as url:
        yield url


@pytest.fixture
def own_postgres(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    with databases.own_database("postgres", postgres_url, tmp_path) as url:
        yield url


def a_team(database_url: str, fernet_key: str, organization_id: int) -> tuple[int, str]:
    """A team of its own organization: (integration id, team id)."""
    with session_factory(database_url).begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=organization_id,
            account_name=f"acct-{organization_id}",
            base_url="https://api.opsgenie.com/",
            allowed_base_urls=["https://api.opsgenie.com/"],
        )
        team = inventory.add_team(
            session,
            organization_id=organization_id,
            integration_id=integration.id,
            label="ops",
            integration_key=f"key-{uuid.uuid4()}",
            vault=KeyVault([fernet_key.encode()]),
        )
        return integration.id, team.id


def a_request(
    organization_id: int,
    integration_id: int,
    team_id: str,
    made: datetime,
    finished: datetime | None,
) -> dict[str, Any]:
    return {
        "id": new_request_id(int(made.timestamp() * 1000)),
        "organization_id": organization_id,
        "integration_id": integration_id,
        "team_id": team_id,
        "requested_by": Requester.BEAT,
        "state": RequestState.DONE if finished else RequestState.PENDING,
        "attempts": 1,
        "created_at": made,
        "finished_at": finished,
    }


def test_pruning_keeps_each_teams_latest_the_open_and_the_referred_to(
    own_database: str, fernet_key: str
) -> None:
    sessions = session_factory(own_database)
    a_integration, a = a_team(own_database, fernet_key, 1)
    b_integration, b = a_team(own_database, fernet_key, 2)
    now = utcnow()

    def finished(org: int, integration: int, team: str, age: int) -> dict[str, Any]:
        at = now - age * DAY
        return a_request(org, integration, team, at - timedelta(minutes=1), at)

    rows = {
        "a_old": finished(1, a_integration, a, 100),
        "a_changed": finished(1, a_integration, a, 90),
        "a_held": finished(1, a_integration, a, 80),
        "a_old_too": finished(1, a_integration, a, 70),
        "a_latest": finished(1, a_integration, a, 2),
        "b_latest": finished(2, b_integration, b, 60),
        "b_open": a_request(2, b_integration, b, now - 50 * DAY, None),
        # Another organization naming B's team id: it is no later request of B's team.
        "c_same_name": finished(3, b_integration, b, 1),
    }
    ids = {name: row["id"] for name, row in rows.items()}
    with sessions.begin() as session:
        session.execute(insert(ValidationRequest), list(rows.values()))
        session.add(
            TeamStatusChange(
                team_id=a,
                request_id=ids["a_changed"],
                old_status=TeamStatus.VALID,
                new_status=TeamStatus.INVALID_KEY,
                changed_at=now - 90 * DAY,
            )
        )
        session.add(
            HeldChange(
                team_id=a,
                request_id=ids["a_held"],
                base_url="https://api.opsgenie.com/",
                account="acct-1",
                key_version=1,
                old_status=TeamStatus.VALID,
                new_status=TeamStatus.INVALID_KEY,
            )
        )

    # Pages of two, one page a run: a pass over the five old rows takes three runs,
    # each going on from where the last stopped.
    passes = []
    for _ in range(3):
        deleted = prune_requests(sessions, 30, now=now, page_size=2, max_pages=1)
        with sessions() as session:
            mark = session.get(RetentionMark, REQUESTS_RETENTION)
            assert mark is not None
            passes.append((deleted, mark.pruned_before))
    assert passes == [(1, None), (1, None), (0, now - 30 * DAY)]

    with sessions() as session:
        left = set(session.scalars(select(ValidationRequest.id)))
    assert left == {ids[name] for name in rows} - {ids["a_old"], ids["a_old_too"]}
    assert prune_requests(sessions, 30, now=now) == 0
    assert prune_requests(sessions, 0, now=now + 3650 * DAY) == 0  # 0 keeps every row

    # A pruned id made before the pass's cut-off is expired (410); an id on record, a
    # new one, and a random (pre-0009) one are not.
    assert expired(sessions, ids["a_old"])
    assert not expired(sessions, new_request_id())
    assert not expired(sessions, uuid.uuid4())


TEAMS = 600
DAYS = 365
PAGE = 5_000


def explain(session: Session, statement: Executable) -> dict[str, Any]:
    """The executed plan of `statement` (EXPLAIN ANALYZE, with buffers), as JSON."""
    compiled = statement.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True}
    )
    plan = (
        session.connection()
        .exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}", compiled.params)
        .scalar_one()
    )
    return dict(plan[0]["Plan"])


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Each scan of the plan, in order: its kind and index (None: a sequential scan)."""
    return [(n["Node Type"], n.get("Index Name")) for n in nodes(plan) if "Scan" in n["Node Type"]]


def examined(plan: dict[str, Any]) -> int:
    """Index entries and rows the plan's scans returned or filtered out, over every loop:
    the work of the statement, counted."""
    return sum(
        (int(n["Actual Rows"]) + int(n.get("Rows Removed by Filter", 0))) * int(n["Actual Loops"])
        for n in nodes(plan)
        if "Scan" in n["Node Type"]
    )


def test_every_page_of_a_years_pruning_is_a_bounded_range_scan(own_postgres: str) -> None:
    """A year of daily requests for a fleet; a month is kept. Every page reads one
    range of `ix_validation_requests_finished` (as many entries as it returns, none
    filtered out), and deletes through index probes only; the buffers a page touches
    stay the same from the first page to the last."""
    sessions = session_factory(own_postgres)
    with sessions.begin() as session:
        session.connection().exec_driver_sql(
            "INSERT INTO validation_requests (id, organization_id, integration_id, team_id, "
            "requested_by, state, outcome, attempts, created_at, started_at, finished_at) "
            "SELECT gen_random_uuid(), 1 + mod(t, 50), 1 + mod(t, 50), "
            "(1 + mod(t, 50)) || '-team-' || t, 'beat', 'done', 'valid', 1, at, at, "
            "at + interval '1 minute' "
            "FROM generate_series(1, %(days)s) AS d, generate_series(1, %(teams)s) AS t, "
            "LATERAL (SELECT now() - d * interval '1 day' AS at) AS made",
            {"days": DAYS, "teams": TEAMS},
        )
    with psycopg.connect(
        make_url(own_postgres).set(drivername="postgresql").render_as_string(False),
        autocommit=True,
    ) as connection:
        connection.execute("VACUUM ANALYZE validation_requests")
    now = utcnow()
    before = now - 30 * DAY
    pages: list[tuple[int, int, int]] = []  # (rows in the page, examined reading, deleting)
    while True:
        with sessions.begin() as session:
            cursor = cursor_of(session.get(RetentionMark, REQUESTS_RETENTION))
            reading = explain(session, page_of_requests(cursor, before, PAGE))
            assert scans(reading) == [("Index Only Scan", "ix_validation_requests_finished")]
            rows = session.execute(page_of_requests(cursor, before, PAGE)).all()
            deleting = None
            if rows:
                with session.begin_nested() as savepoint:  # counted, then undone
                    deleting = explain(session, unkept(cursor, tuple(rows[-1]), before))
                    savepoint.rollback()
                # The page's range once more, and one index probe per row and reference.
                assert sorted(index for _, index in scans(deleting) if index) == [
                    "ix_held_changes_request_id",
                    "ix_validation_requests_finished",
                    "ix_validation_requests_team_finished",
                    "uq_team_status_changes_request_id",
                ], scans(deleting)
                assert [kind for kind, index in scans(deleting) if not index] in (
                    [],
                    ["Bitmap Heap Scan"],  # reading the heap for the range's bitmap
                ), scans(deleting)
            deleted, done = prune_requests_page(session, before, PAGE)
            assert deleted == len(rows)  # every old row has a later one of its team
        pages.append((len(rows), examined(reading), examined(deleting) if deleting else 0))
        if done:
            break

    old = TEAMS * (DAYS - 30)
    full = pages[:-1]
    assert len(full) == old // PAGE and all(entries == PAGE for entries, _, _ in full)
    first, last = full[0], full[-1]
    # The same work for the first page as for the last: the page's entries when
    # reading; when deleting, its rows again and one probe per row (the team's later
    # request found; the references' probes find nothing).
    assert first == last == (PAGE, PAGE, 2 * PAGE), pages
    with sessions() as session:
        kept = session.scalar(
            select(ValidationRequest.id).where(ValidationRequest.finished_at < before)
        )
    assert kept is None
