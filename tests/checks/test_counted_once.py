"""Counted once (issue #22, item 3): every change enters the guard's window exactly once
per committed write, and a trip is announced exactly once, whatever refused writes and
lost connections happen, on Redis windows and on the database's, through the real
pipeline (`run_batch`, `run_attempt`) against the fake Opsgenie.

21 valid teams of three organizations (7 each) all turn `invalid_key` in one batch.
With the default thresholds the 20th counted change trips the guard. One team's write
is refused by a trigger (so the batch is redone one by one, and that team's write
refused again, then retried), or the database connection is lost mid-write (so the
attempt is redone whole). Either way the window ends with 21 changes, 19 written, 2
held, and one announcement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
import redis
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import OperationalError

from models import GuardWindow, HeldChange, Requester, Team, TeamStatus, TeamStatusChange
from models.crypto import KeyVault
from worker import inventory
from worker.checks import requests
from worker.checks.guard import (
    DatabaseWindows,
    Guard,
    RedisWindows,
    Thresholds,
    Totals,
    Trip,
    Windows,
)
from worker.checks.pipeline import Collaborators, Finished, RetryLater, run_attempt, run_batch
from worker.checks.requests import Ask
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

T = Thresholds()
ORGANIZATIONS, PER_ORGANIZATION = 3, 7


@dataclass
class Storm:
    """21 valid teams in one batch, whose keys now answer 401; the trips announced."""

    deps: Collaborators
    windows: Windows
    batch_id: uuid.UUID
    teams: list[str]
    request_of: dict[str, uuid.UUID]
    announced: list[Trip] = field(default_factory=list)

    def first_written(self) -> str:
        """The team whose change is written first: a batch's checks are written in the
        order of their request ids, and the last two changes are the held ones."""
        return min(self.teams, key=lambda team_id: self.request_of[team_id])

    def window(self) -> Totals:
        with self.deps.sessions() as session:
            found = self.windows.read(session.connection())
        return found[self.deps.options.base_urls["opsgenie"]].totals(T)

    def written_and_held(self) -> tuple[int, int]:
        with self.deps.sessions() as session:
            written = session.scalar(
                select(func.count())
                .select_from(TeamStatusChange)
                .where(
                    TeamStatusChange.team_id.in_(self.teams),
                    TeamStatusChange.new_status == TeamStatus.INVALID_KEY,
                )
            )
            held = session.scalar(
                select(func.count())
                .select_from(HeldChange)
                .where(HeldChange.team_id.in_(self.teams))
            )
        return written or 0, held or 0


@pytest.fixture(params=["database", "redis"])
def windows(request: pytest.FixtureRequest, database_url: str) -> Windows:
    if request.param == "database":
        return DatabaseWindows()
    url = request.getfixturevalue("redis_url")
    return RedisWindows(redis.Redis.from_url(url), f"counted-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def storm(
    deps: Collaborators, settings: Settings, fake: FakeOpsgenie, windows: Windows
) -> Iterator[Storm]:
    base_url = deps.options.base_urls["opsgenie"]
    forget_window(deps, base_url)
    vault = KeyVault(settings.fernet_keys())
    asks, keys = [], []
    with deps.sessions.begin() as session:
        for _ in range(ORGANIZATIONS):
            org = uuid.uuid4().int % 10**12 + 1
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"acct-{org}",
                base_url=base_url,
                allowed_base_urls=settings.allowed_base_urls,
            )
            for n in range(PER_ORGANIZATION):
                key = f"key-{uuid.uuid4()}"
                team = inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=f"team-{n}",
                    integration_key=key,
                    vault=vault,
                )
                asks.append(Ask(org, integration.id, team.id))
                keys.append(key)
        teams = [ask.team_id for ask in asks]
        session.execute(update(Team).where(Team.id.in_(teams)).values(status=TeamStatus.VALID))
        batch_id = uuid.uuid4()
        asked = requests.create_requests(
            session, asks, requested_by=Requester.BEAT, batch_id=batch_id
        )
        request_of = {ask.team_id: request.id for ask, (request, _) in asked.items()}
    for key in keys:
        fake.set_key(key, KeyScenario("invalid_key"))
    made = Storm(deps, windows, batch_id, teams, request_of)
    made.deps = replace(deps, guard=Guard(0.0, T, windows), on_guard_trips=made.announced.extend)
    yield made
    forget_window(deps, base_url)


def forget_window(deps: Collaborators, base_url: str) -> None:
    """The session's database is shared: leave no window of this base URL behind."""
    with deps.sessions.begin() as session:
        session.execute(delete(GuardWindow).where(GuardWindow.base_url == base_url))


@pytest.fixture
def refusing(storm: Storm) -> Iterator[list[str]]:
    """A trigger that refuses to update the teams listed in `refused_teams`."""
    refused: list[str] = []
    with storm.deps.sessions.begin() as session:
        # Dropped at the end: the session's database must keep the models' schema.
        session.execute(text("CREATE TABLE refused_teams (team_id TEXT)"))
        if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            session.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_team() RETURNS trigger AS $$ BEGIN "
                    "IF EXISTS (SELECT 1 FROM refused_teams WHERE team_id = NEW.id) THEN "
                    "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            session.execute(
                text(
                    "CREATE TRIGGER refuse_team BEFORE UPDATE ON teams "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_team()"
                )
            )
        else:
            session.execute(
                text(
                    "CREATE TRIGGER refuse_team BEFORE UPDATE ON teams WHEN EXISTS "
                    "(SELECT 1 FROM refused_teams WHERE team_id = NEW.id) "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
    yield refused
    with storm.deps.sessions.begin() as session:
        if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            session.execute(text("DROP TRIGGER refuse_team ON teams"))
            session.execute(text("DROP FUNCTION refuse_team()"))
        else:
            session.execute(text("DROP TRIGGER refuse_team"))
        session.execute(text("DROP TABLE refused_teams"))


def refuse(storm: Storm, team_id: str | None) -> None:
    with storm.deps.sessions.begin() as session:
        session.execute(text("DELETE FROM refused_teams"))
        if team_id is not None:
            session.execute(text("INSERT INTO refused_teams VALUES (:t)"), {"t": team_id})


def test_a_refused_write_redone_one_by_one_counts_each_change_once(
    storm: Storm, refusing: list[str]
) -> None:
    refused = storm.first_written()
    refuse(storm, refused)
    report = run_batch(storm.batch_id, storm.deps)
    step = report.steps[storm.request_of[refused]]
    assert isinstance(step, RetryLater) and step.error.code == "write_failed"
    assert sum(isinstance(s, Finished) for s in report.steps.values()) == 20

    refuse(storm, None)
    assert isinstance(run_attempt(storm.request_of[refused], storm.deps), Finished)

    assert storm.window() == Totals(21, 21, 3, 21, 21)
    assert storm.written_and_held() == (19, 2)
    assert len(storm.announced) == 1
    trip = storm.announced[0]
    assert (trip.changes, trip.organizations, trip.number) == (20, 3, 1)


# A lost connection is PostgreSQL's: the embedded default's SQLite is a file.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_lost_connection_redone_whole_counts_each_change_once(storm: Storm) -> None:
    killed = storm.first_written()
    with storm.deps.sessions.begin() as session:
        session.execute(text("CREATE SEQUENCE IF NOT EXISTS lose_connection"))
        session.execute(
            text(
                "CREATE OR REPLACE FUNCTION lose_connection() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.id = '{killed}' AND nextval('lose_connection') = 1 THEN "
                "PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        session.execute(
            text(
                "CREATE TRIGGER lose_connection BEFORE UPDATE ON teams "
                "FOR EACH ROW EXECUTE FUNCTION lose_connection()"
            )
        )
    try:
        with pytest.raises(OperationalError):
            run_batch(storm.batch_id, storm.deps)
        # The task is retried (Celery does it on a lost connection): the attempt again.
        report = run_batch(storm.batch_id, storm.deps)
    finally:
        with storm.deps.sessions.begin() as session:
            session.execute(text("DROP TRIGGER lose_connection ON teams"))
            session.execute(text("DROP FUNCTION lose_connection()"))
            session.execute(text("DROP SEQUENCE lose_connection"))
    assert sum(isinstance(s, Finished) for s in report.steps.values()) == 21
    assert storm.window() == Totals(21, 21, 3, 21, 21)
    assert storm.written_and_held() == (19, 2)
    assert len(storm.announced) == 1 and storm.announced[0].changes == 20
