"""No poison (issue 14, item 1): no check's data can stall a request or its batch.

- every value written is cut to its column, whatever produced it;
- a check whose write the database refuses costs its own request an attempt, and
  never its batch: the others are written, and it is retried alone until it ends
  `error` / `write_failed`, its team untouched;
- an answer our own code cannot read fails its check, not its batch;
- a database that cannot be reached still fails the whole attempt, to be retried.

The refusals are the database's own: a trigger on SQLite and on PostgreSQL refuses
one team's or one request's write. The hostile answers come from a real stand-in
server over HTTP (`tests.hostile_upstream`). Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from models import (
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
from models.db import session_factory
from tests.support.hostile_upstream import KINDS, THROTTLED, HostileUpstream, fragments, leaks
from worker import inventory
from worker.checks import claims, records, requests
from worker.checks.opsgenie import REDACTED, UnrecognisedAnswer
from worker.checks.pipeline import (
    Collaborators,
    Finished,
    ProbeFailed,
    RetryLater,
    Step,
    WriteFailed,
    run_attempt,
    run_batch,
)
from worker.checks.ratelimit import LocalGate
from worker.checks.retries import RetryPolicy
from worker.checks.rules import Result, Target, resolve
from worker.checks.runtime import Runtime
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

_orgs = itertools.count(9_000_000 + uuid.uuid4().int % 100_000 * 1000)


@dataclass
class Fleet:
    """One organization's teams, one account and one key each, asked about in one batch."""

    org: int
    teams: list[str]
    keys: dict[str, str]
    """Team id → its key."""
    requests: dict[str, uuid.UUID]
    """Team id → its request."""
    batch_id: uuid.UUID


def fleet(deps: Collaborators, base_url: str, keys: list[str]) -> Fleet:
    """A team per key, each of its own account at `base_url`, and a batch checking them."""
    org, teams, asks = next(_orgs), [], []
    with deps.sessions.begin() as session:
        for n, key in enumerate(keys):
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"poison-{org}-{n}",
                base_url=base_url,
                allowed_base_urls=[base_url],
            )
            team = inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=f"team-{n}",
                integration_key=key,
                vault=deps.vault,
            )
            teams.append(team.id)
            asks.append(requests.Ask(org, integration.id, team.id))
        batch_id = uuid.uuid4()
        made = requests.create_requests(
            session, asks, requested_by=Requester.BEAT, batch_id=batch_id
        )
        ids = {ask.team_id: request.id for ask, (request, _) in made.items()}
    return Fleet(org, teams, dict(zip(teams, keys, strict=True)), ids, batch_id)


def good_fleet(deps: Collaborators, fake: FakeOpsgenie, size: int) -> Fleet:
    keys = [f"key-{uuid.uuid4()}" for _ in range(size)]
    for key in keys:
        fake.set_key(key, KeyScenario("valid"))
    return fleet(deps, fake.url, keys)


def request_of(deps: Collaborators, request_id: uuid.UUID) -> ValidationRequest:
    with deps.sessions() as session:
        request = session.get(ValidationRequest, request_id)
        assert request is not None
        return request


def team_of(deps: Collaborators, team_id: str) -> Team:
    with deps.sessions() as session:
        team = session.get(Team, team_id)
        assert team is not None
        return team


def run_until_final(deps: Collaborators, request_id: uuid.UUID, limit: int = 10) -> list[Step]:
    """Attempts the way the task makes them, until one finishes the request."""
    steps: list[Step] = []
    for _ in range(limit):
        steps.append(run_attempt(request_id, deps))
        if isinstance(steps[-1], Finished):
            return steps
        assert isinstance(steps[-1], RetryLater), steps
        deps = replace(deps, gate=LocalGate())  # the pause of a throttle has gone by
    raise AssertionError(f"the request never finished: {steps}")


# -- every value fits its column -------------------------------------------------------


HOSTILE = Result(
    Outcome.REJECTED,
    "m" * 5000 + "\n\x00forged",
    http_status=2**40,
    error_code="E" * 200 + "\nlevel=ERROR",
    works_on=("opsgenie-eu",) * 20,
    rate_limit_state="S" * 100,
    rate_limit_reason="\x00R" * 50,
)
"""A result no upstream answer can produce (the client scrubs and bounds every field):
only the write's own defence stands between it and the columns."""


def claimed_target(deps: Collaborators, request_id: uuid.UUID) -> Target:
    with deps.sessions.begin() as session:
        [claim] = claims.claim_one(session, request_id, timedelta(minutes=1))
        target = resolve(session, claim, deps.vault)
    assert isinstance(target, Target)
    return target


def test_every_value_is_cut_to_its_column_before_it_is_written(
    deps: Collaborators, fake: FakeOpsgenie
) -> None:
    """Without the write's defence PostgreSQL refuses the row (error_code is
    String(64)); SQLite stores whatever it is given."""
    batch = good_fleet(deps, fake, 1)
    [team_id] = batch.teams
    request_id = batch.requests[team_id]
    target = claimed_target(deps, request_id)

    with deps.sessions.begin() as session:
        completion = records.Completion(request_id, HOSTILE, target, utcnow(), 1)
        assert records.finish_many(session, [completion]).finished == [request_id]

    request, team = request_of(deps, request_id), team_of(deps, team_id)
    assert request.message == "m" * records.TEXT_LIMIT
    assert request.error_code == "E" * 64
    assert request.http_status is None  # past an Integer column's range
    assert request.rate_limit_state == "S" * 32
    assert request.rate_limit_reason == "R" * 32
    assert request.works_on == ",".join(("opsgenie-eu",) * 20)[:100]
    assert (request.state, request.outcome, request.attempts) == (
        RequestState.DONE,
        Outcome.REJECTED,
        1,
    )
    assert (team.status, team.last_error_code, team.last_http_status) == (
        TeamStatus.REJECTED,
        "E" * 64,
        None,
    )
    assert team.works_on == request.works_on


def test_a_retry_note_is_cut_to_its_columns(deps: Collaborators, fake: FakeOpsgenie) -> None:
    batch = good_fleet(deps, fake, 1)
    request_id = batch.requests[batch.teams[0]]
    claimed_target(deps, request_id)

    with deps.sessions.begin() as session:
        claims.note_retry(session, request_id, HOSTILE, attempts=2, delay=1.0)

    request = request_of(deps, request_id)
    assert (request.state, request.attempts) == (RequestState.PENDING, 2)
    assert request.message == "m" * records.TEXT_LIMIT
    assert (request.error_code, request.http_status) == ("E" * 64, None)
    assert (request.rate_limit_state, request.rate_limit_reason) == ("S" * 32, "R" * 32)


def test_what_is_logged_is_what_is_stored() -> None:
    fitted = records.fitted(HOSTILE)
    assert fitted.error_code == "E" * 64
    assert fitted.message == "m" * records.TEXT_LIMIT
    assert fitted.http_status is None
    assert records.fitted(fitted) == fitted


# -- a refused write costs its own request an attempt, never its batch -----------------


Refuse = Callable[[str, str], None]
"""Install a trigger: `refuse("team", team_id)` refuses every UPDATE of that team;
`refuse("request", request_id)` refuses a verdict written to that request."""


def _engine(deps: Collaborators) -> Engine:
    engine = deps.sessions.kw["bind"]
    assert isinstance(engine, Engine)
    return engine


def _sqlite_trigger(name: str, what: str, row: str) -> str:
    if what == "team":
        table, when = "teams", f"OLD.id = '{row}'"
    else:
        table = "validation_requests"
        when = f"OLD.id = '{uuid.UUID(row).hex}' AND NEW.outcome IN {VERDICTS}"
    return (
        f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW WHEN {when} "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )


def _postgres_trigger(name: str, what: str, row: str) -> list[str]:
    if what == "team":
        # A constraint's refusal: IntegrityError.
        table, when, code = "teams", f"OLD.id = '{row}'", "check_violation"
    else:
        # A trigger's own: InternalError (raise_exception).
        table = "validation_requests"
        when = f"OLD.id = '{row}'::uuid AND NEW.outcome IN {VERDICTS}"
        code = "raise_exception"
    return [
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{code}'; END $$",
        f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW WHEN ({when}) "
        f"EXECUTE FUNCTION {name}()",
    ]


VERDICTS = "('valid', 'invalid_key', 'key_lacks_access', 'rejected')"


@pytest.fixture
def refuse(deps: Collaborators) -> Iterator[Refuse]:
    """Triggers that make the database refuse one row's write; dropped afterwards."""
    engine = _engine(deps)
    installed: list[tuple[str, str]] = []

    def install(what: str, row: str) -> None:
        name = f"refuse_{uuid.uuid4().hex[:12]}"
        table = "teams" if what == "team" else "validation_requests"
        if engine.dialect.name == "postgresql":
            statements = _postgres_trigger(name, what, row)
        else:
            statements = [_sqlite_trigger(name, what, row)]
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
        installed.append((name, table))

    yield install
    with engine.begin() as connection:
        for name, table in installed:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
                connection.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
            else:
                connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


@pytest.mark.parametrize("refused", ["team", "request"])
def test_a_refused_write_costs_its_own_request_and_never_its_batch(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings, refuse: Refuse, refused: str
) -> None:
    batch = good_fleet(deps, fake, 5)
    bad, good = batch.teams[2], [t for t in batch.teams if t != batch.teams[2]]
    bad_request = batch.requests[bad]
    refuse(refused, bad if refused == "team" else str(bad_request))

    report = run_batch(batch.batch_id, deps)

    # The others are written as if nothing had happened.
    for team_id in good:
        step = report.steps[batch.requests[team_id]]
        assert isinstance(step, Finished) and step.result.outcome is Outcome.VALID
        request = request_of(deps, batch.requests[team_id])
        assert (request.state, request.outcome, request.attempts) == (
            RequestState.DONE,
            Outcome.VALID,
            1,
        )
        assert team_of(deps, team_id).status is TeamStatus.VALID
    assert sorted(change.team_id for change in report.changes) == sorted(good)
    # The refused one counted its attempt, and goes back alone.
    assert set(report.retries) == {bad_request}
    assert isinstance(report.retries[bad_request].error, WriteFailed)
    noted = request_of(deps, bad_request)
    assert (noted.state, noted.attempts, noted.error_code, noted.outcome) == (
        RequestState.PENDING,
        1,
        "write_failed",
        None,
    )

    steps = run_until_final(deps, bad_request)

    assert [type(step) for step in steps] == [RetryLater] * (settings.max_attempts - 2) + [Finished]
    final = request_of(deps, bad_request)
    assert (final.state, final.outcome, final.error_code, final.attempts) == (
        RequestState.FAILED,
        Outcome.ERROR,
        "write_failed",
        settings.max_attempts,
    )
    assert final.message is not None and "could not be written" in final.message
    assert "refused by the test" not in final.message  # the database's text is not kept
    assert fake.calls(batch.keys[bad]) == settings.max_attempts  # one call per attempt
    # The team never took the outcome that could not be written.
    team = team_of(deps, bad)
    assert (team.status, team.last_checked_at, team.last_error_code) == (
        TeamStatus.UNKNOWN,
        None,
        None,
    )
    with deps.sessions() as session:
        history = session.scalars(select(TeamStatusChange).where(TeamStatusChange.team_id == bad))
        assert history.all() == []


def test_a_lone_refused_write_is_counted_and_ends_write_failed(
    deps: Collaborators, fake: FakeOpsgenie, settings: Settings, refuse: Refuse
) -> None:
    """The single-request path (web apps, the CLI): the same write is not tried twice."""
    batch = good_fleet(deps, fake, 1)
    [team_id] = batch.teams
    refuse("team", team_id)

    steps = run_until_final(deps, batch.requests[team_id])

    assert len(steps) == settings.max_attempts
    retries = [step for step in steps if isinstance(step, RetryLater)]
    assert [type(retry.error) for retry in retries] == [WriteFailed] * (len(steps) - 1)
    last = steps[-1]
    assert isinstance(last, Finished) and last.result.error_code == "write_failed"
    assert team_of(deps, team_id).status is TeamStatus.UNKNOWN


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_database_gone_mid_write_still_fails_the_whole_attempt(
    deps: Collaborators, fake: FakeOpsgenie
) -> None:
    """Only a refusal is one request's fault: a lost connection is retried whole, as before
    (the task retries it; the lease and the sweeper stand behind it). PostgreSQL only:
    the trigger ends its own connection (`pg_terminate_backend`)."""
    engine = _engine(deps)
    batch = good_fleet(deps, fake, 3)
    name = f"vanish_{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"
            )
        )
        connection.execute(
            text(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON teams FOR EACH ROW "
                f"WHEN (OLD.id = '{batch.teams[1]}') EXECUTE FUNCTION {name}()"
            )
        )
    try:
        with pytest.raises(DBAPIError) as raised:
            run_batch(batch.batch_id, deps)
        assert raised.value.connection_invalidated
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TRIGGER {name} ON teams"))
            connection.execute(text(f"DROP FUNCTION {name}()"))
    for request_id in batch.requests.values():
        request = request_of(deps, request_id)
        assert (request.state, request.attempts) == (RequestState.RUNNING, 0)


# -- hostile answers -------------------------------------------------------------------


@pytest.fixture
def hostile() -> Iterator[HostileUpstream]:
    with HostileUpstream() as server:
        yield server


@pytest.fixture
def hostile_deps(settings: Settings, hostile: HostileUpstream) -> Iterator[Collaborators]:
    """The pipeline's collaborators, with the stand-in allowed."""
    allowed = settings.model_copy(
        update={"allowed_base_urls": [*settings.allowed_base_urls, hostile.url]}
    )
    runtime = Runtime.start(allowed)
    yield Collaborators(
        sessions=session_factory(allowed.effective_database_url),
        client=runtime.client,
        gate=runtime.gate,
        vault=KeyVault(allowed.fernet_keys()),
        policy=RetryPolicy.from_settings(allowed),
        run=runtime.run,
    )
    runtime.close()


def test_every_hostile_answer_ends_its_check_and_no_key_is_kept(
    hostile_deps: Collaborators,
    hostile: HostileUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One check per kind of hostile answer, in one batch: each ends as its kind says,
    including JSON nested past the parser's limit, which raises RecursionError in our
    own code; no key reaches a column (the rate-limit headers of a 429 included) or a
    log record."""
    caplog.set_level(logging.INFO)
    kinds = {**KINDS, "throttled": THROTTLED}
    keys = {kind: f"key-{uuid.uuid4()}" for kind in kinds}
    hostile.kinds.update({key: kind for kind, key in keys.items()})
    batch = fleet(hostile_deps, hostile.url, list(keys.values()))
    kind_of = {team: kind for team, kind in zip(batch.teams, keys, strict=True)}

    report = run_batch(batch.batch_id, hostile_deps)

    deep = batch.requests[batch.teams[list(keys).index("deep")]]
    assert isinstance(report.retries[deep].error, UnrecognisedAnswer)
    for request_id in report.retries:
        run_until_final(hostile_deps, request_id)
    found = {
        kind_of[team]: (
            request_of(hostile_deps, request_id).outcome,
            request_of(hostile_deps, request_id).error_code,
            team_of(hostile_deps, team).status,
        )
        for team, request_id in batch.requests.items()
    }
    assert found == {
        kind: (Outcome(expected.outcome), expected.error_code, TeamStatus(expected.status))
        for kind, (_, expected) in kinds.items()
    }
    throttled = request_of(hostile_deps, batch.requests[batch.teams[list(keys).index("throttled")]])
    assert (throttled.rate_limit_state, throttled.rate_limit_reason) == (
        f"{REDACTED}{'S' * 22}",
        f"ACCOUNT {REDACTED}",
    )
    pieces = set().union(*(fragments(key) for key in keys.values()))
    with hostile_deps.sessions() as session:
        stored = [
            repr(vars(request))
            for request in session.scalars(
                select(ValidationRequest).where(ValidationRequest.organization_id == batch.org)
            )
        ]
        for team_id in batch.teams:
            team = session.get(Team, team_id)
            assert team is not None
            stored.append(repr({k: v for k, v in vars(team).items() if k != "encrypted_key"}))
    logged = [repr(vars(record)) for record in caplog.records]
    assert leaks("\n".join(stored), pieces) == set()
    assert leaks("\n".join(logged), pieces) == set()


class ExplodingClient:
    """A client whose probe raises what no probe should: a bug, not an answer."""

    async def check_key(self, base_url: str, key: str, **_: object) -> None:
        raise RuntimeError(f"unexpected failure while reading {key}")


def test_an_unexpected_error_in_one_probe_is_that_checks_failure_only(
    hostile_deps: Collaborators, hostile: HostileUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    keys = [f"key-{uuid.uuid4()}" for _ in range(3)]
    batch = fleet(hostile_deps, hostile.url, keys)
    exploding = replace(hostile_deps, client=ExplodingClient())  # type: ignore[arg-type]

    report = run_batch(batch.batch_id, exploding)

    assert {type(retry.error) for retry in report.retries.values()} == {ProbeFailed}
    for request_id in report.retries:
        run_until_final(exploding, request_id)
    found = {
        (request_of(hostile_deps, r).outcome, request_of(hostile_deps, r).error_code)
        for r in batch.requests.values()
    }
    assert found == {(Outcome.ERROR, "probe_failed")}
    assert {team_of(hostile_deps, team).status for team in batch.teams} == {TeamStatus.UNKNOWN}
    failed = [r for r in caplog.records if r.getMessage() == "validation.probe_failed"]
    assert failed and not any(key in repr(vars(r)) for r in failed for key in keys)
