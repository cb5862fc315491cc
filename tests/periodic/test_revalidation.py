"""Periodic re-validation: streaming dispatch, bulk batches, pacing, status events."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from models import (
    Integration,
    OrganizationIntegration,
    Outcome,
    Requester,
    RequestState,
    Team,
    ValidationRequest,
)
from models.crypto import KeyVault
from models.db import session_factory
from tests.support.pipeline import add_teams
from worker.checks import requests
from worker.checks.pipeline import Collaborators, Finished, run_attempt, run_batch
from worker.checks.ratelimit import Pacing
from worker.checks.retries import RetryPolicy
from worker.checks.runtime import Runtime
from worker.periodic import dispatch
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario


class Statements:
    """Counts the SQL statements an engine runs, by their first words."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, bool]] = []

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, executemany: bool
    ) -> None:
        self.seen.append((" ".join(statement.split()), executemany))

    def matching(self, prefix: str) -> list[str]:
        return [s for s, _ in self.seen if s.upper().startswith(prefix.upper())]


def engine_of(settings: Settings) -> Engine:
    engine = session_factory(settings.effective_database_url).kw["bind"]
    assert isinstance(engine, Engine)
    return engine


def run_dispatch(
    settings: Settings, org: int, plan: dispatch.Plan
) -> tuple[dispatch.Dispatched, list[tuple[uuid.UUID, float]]]:
    sessions = session_factory(settings.effective_database_url)
    published: list[tuple[uuid.UUID, float]] = []
    run_id = dispatch.start_run(sessions, Requester.BEAT, org)
    sent = dispatch.dispatch(sessions, lambda b, c: published.append((b, c)), run_id, plan)
    return sent, published


def test_dispatch_streams_pages_and_records_in_bulk(settings: Settings, fake: FakeOpsgenie) -> None:
    org, team_ids, _ = add_teams(settings, fake, accounts=20, per_account=50)  # 1,000 teams
    with Statements(engine_of(settings)) as sql:
        sent, published = run_dispatch(settings, org, dispatch.Plan(25, 100, window=10.0))

    # Pages of at most 100 teams: each round takes the next few teams of every
    # account by label, with one bulk INSERT per page. The first page holds about a
    # batch (one team of each account), the second twice as many, then the five of
    # each account a page of 100 allows, until the two left.
    takes = [1, 2, 5, 5, 5, 5, 5, 5, 5, 5, 5, 2]
    inserts = sql.matching("INSERT INTO validation_requests")
    assert len(inserts) == len(takes)
    rounds = [
        s for s in sql.matching("SELECT") if "FROM teams" in s and "ORDER BY teams.label" in s
    ]
    per_round = 1 if engine_of(settings).dialect.name == "postgresql" else 20
    assert len(rounds) == len(takes) * per_round
    assert all("LIMIT" in s for s in rounds)
    batches_per_page = [math.ceil(20 * take / 25) for take in takes]
    assert sent.requests == 1000 and sent.batches == len(published) == sum(batches_per_page)
    countdowns = sorted(c for _, c in published)
    assert countdowns[0] == 0 and 9.0 < countdowns[-1] < 10.0
    with session_factory(settings.effective_database_url)() as session:
        rows = session.execute(
            select(ValidationRequest.batch_id, ValidationRequest.team_id).where(
                ValidationRequest.run_id == sent.run_id
            )
        ).all()
    assert sorted(team_id for _, team_id in rows) == team_ids
    teams_of: dict[uuid.UUID, list[str]] = {}
    for batch_id, team_id in rows:
        teams_of.setdefault(batch_id, []).append(team_id)
    # Every page, in the order it was published, holds its round's take of each account.
    order = iter(batch_id for batch_id, _ in published)
    for take, count in zip(takes, batches_per_page, strict=True):
        page = [next(order) for _ in range(count)]
        accounts = Counter(team.split("-")[0] for batch in page for team in teams_of[batch])
        assert len(accounts) == 20 and set(accounts.values()) == {take}
        for batch in page:  # no account twice in a batch while others have teams left
            assert len({team.split("-")[0] for team in teams_of[batch]}) == min(
                20, len(teams_of[batch])
            )


def test_dispatch_reads_few_teams_of_every_account_per_page(
    settings: Settings, fake: FakeOpsgenie
) -> None:
    # Ids put each account's teams side by side: read by id, a page of 30 would hold
    # one account and a half, and the batches running at once would all wait on
    # the same account's pacing.
    org, team_ids, _ = add_teams(settings, fake, accounts=6, per_account=20)
    with Statements(engine_of(settings)) as sql:
        sent, published = run_dispatch(settings, org, dispatch.Plan(6, 30))

    assert sent.requests == 120 and len(published) == 20
    with session_factory(settings.effective_database_url)() as session:
        batch_of = dict(
            session.execute(
                select(ValidationRequest.team_id, ValidationRequest.batch_id).where(
                    ValidationRequest.run_id == sent.run_id
                )
            ).all()
        )
    order = {batch_id: n for n, (batch_id, _) in enumerate(published)}
    by_batch = sorted(team_ids, key=lambda team: order[batch_of[team]])
    # One INSERT per page. The pages grow from one batch's worth (one team of each
    # account) to the 30 a page holds (five of each), until the three left of each.
    takes = [1, 2, 4, 5, 5, 3]
    assert len(sql.matching("INSERT INTO validation_requests")) == len(takes)
    accounts = {team.split("-")[0] for team in team_ids}
    pages = iter(by_batch)
    for take in takes:
        page = [next(pages) for _ in range(take * len(accounts))]
        assert Counter(team.split("-")[0] for team in page) == dict.fromkeys(accounts, take)
    # Each account's teams are dispatched in label order, one round after another.
    for account in accounts:
        mine = [team for team in by_batch if team.startswith(f"{account}-")]
        assert mine == sorted(mine)


def test_dispatch_skips_teams_with_an_active_check(settings: Settings, fake: FakeOpsgenie) -> None:
    org, team_ids, _ = add_teams(settings, fake, accounts=1, per_account=5)
    busy = team_ids[2]
    with session_factory(settings.effective_database_url).begin() as session:
        integration_id = session.scalar(
            select(OrganizationIntegration.integration_id).where(
                OrganizationIntegration.organization_id == org
            )
        )
        assert integration_id is not None
        requests.create_request(
            session,
            organization_id=org,
            integration_id=integration_id,
            team_id=busy,
            requested_by=Requester.API,
        )
    sent, _ = run_dispatch(settings, org, dispatch.Plan(2, 100))
    assert sent.requests == 4
    with session_factory(settings.effective_database_url)() as session:
        assert session.scalar(select(func.count()).where(ValidationRequest.team_id == busy)) == 1


def test_a_batch_checks_concurrently_writes_in_bulk_and_retries_alone(
    settings: Settings, fake: FakeOpsgenie, deps: Collaborators
) -> None:
    org, team_ids, keys = add_teams(
        settings, fake, accounts=3, per_account=10, scenario=KeyScenario("valid", latency_ms=100)
    )
    flaky, revoked = team_ids[0], team_ids[15]
    fake.set_key(keys[flaky] + "x", KeyScenario("valid"))
    _rekey(settings, flaky, "flaky-" + keys[flaky], fake, KeyScenario("server_error", times=1))
    _rekey(settings, revoked, "revoked-" + keys[revoked], fake, KeyScenario("invalid_key"))
    sent, published = run_dispatch(settings, org, dispatch.Plan(30, 100))
    [(batch_id, _)] = published

    with Statements(engine_of(settings)) as sql:
        report = run_batch(batch_id, deps)

    by_team = _requests_by_team(settings, sent.run_id)
    assert set(report.retries) == {by_team[flaky].id}
    assert {by_team[t].outcome for t in team_ids if t != flaky} >= {Outcome.VALID}
    assert by_team[revoked].outcome is Outcome.INVALID_KEY
    assert by_team[flaky].state is RequestState.PENDING
    writes = [s for s in sql.matching("UPDATE") + sql.matching("INSERT")]
    assert len(writes) <= 8, writes  # bulk statements, not one per team
    assert len(report.changes) == 30 - 1  # every team but the flaky one left `unknown`

    step = run_attempt(by_team[flaky].id, deps)
    assert isinstance(step, Finished) and step.result.outcome is Outcome.VALID
    assert fake.calls("flaky-" + keys[flaky]) == 2
    assert fake.calls(keys[team_ids[1]]) == 9  # one call per team of that account


def _rekey(
    settings: Settings, team_id: str, key: str, fake: FakeOpsgenie, scenario: KeyScenario
) -> None:
    fake.set_key(key, scenario)
    vault = KeyVault(settings.fernet_keys())
    with session_factory(settings.effective_database_url).begin() as session:
        team = session.get(Team, team_id)
        assert team is not None
        team.encrypted_key = vault.encrypt(key)


def _requests_by_team(settings: Settings, run_id: uuid.UUID) -> dict[str, ValidationRequest]:
    with session_factory(settings.effective_database_url)() as session:
        return {
            r.team_id: r
            for r in session.scalars(
                select(ValidationRequest).where(ValidationRequest.run_id == run_id)
            )
        }


def test_a_batch_delivered_twice_changes_nothing(
    settings: Settings, fake: FakeOpsgenie, deps: Collaborators
) -> None:
    org, team_ids, keys = add_teams(settings, fake, accounts=1, per_account=5)
    _, [(batch_id, _)] = run_dispatch(settings, org, dispatch.Plan(10, 100))
    first = run_batch(batch_id, deps)
    second = run_batch(batch_id, deps)
    assert len(first.steps) == 5 and second.steps == {} and second.changes == []
    assert fake.calls(keys[team_ids[0]]) == 5


def test_the_account_pacing_holds_inside_a_batch(settings: Settings, fake: FakeOpsgenie) -> None:
    paced = settings.model_copy(update={"account_rate": 5.0})
    runtime = Runtime.start(paced)
    deps = Collaborators(
        sessions=session_factory(paced.effective_database_url),
        client=runtime.client,
        gate=runtime.gate,
        vault=KeyVault(paced.fernet_keys()),
        policy=RetryPolicy.from_settings(paced),
        run=runtime.run,
        concurrency=50,
        max_wait=10,
    )
    try:
        org, _, _ = add_teams(paced, fake, accounts=1, per_account=12)
        _, [(batch_id, _)] = run_dispatch(paced, org, dispatch.Plan(50, 100))
        report = run_batch(batch_id, deps)
    finally:
        runtime.close()
    assert len(report.steps) == 12
    assert fake.max_calls_per_second(f"acct-{org}-0") <= 5


@pytest.mark.parametrize("lines", [True])
def test_team_import_reports_bad_lines_and_inserts_the_rest(
    settings: Settings, fake: FakeOpsgenie, lines: bool
) -> None:
    from worker.operations.importer import import_teams

    org, _, _ = add_teams(settings, fake, accounts=1, per_account=1)
    with session_factory(settings.effective_database_url)() as session:
        integration_id = session.scalar(
            select(Integration.id)
            .join(OrganizationIntegration)
            .where(OrganizationIntegration.organization_id == org)
        )
    secret = f"import-secret-{uuid.uuid4()}"
    good = {"organization_id": org, "integration_id": integration_id, "integration_key": secret}
    text = [
        json.dumps(good | {"label": "alpha"}),
        "{not json",
        json.dumps(good | {"label": "team-00000"}),  # exists already
        json.dumps(good | {"label": "beta", "integration_id": 999_999_999}),
        json.dumps(good | {"label": "alpha"}),  # duplicate within the file
        json.dumps(good | {"label": 7}),
        "",
        json.dumps(good | {"label": "gamma"}),
    ]
    report = import_teams(
        session_factory(settings.effective_database_url),
        text,
        KeyVault(settings.fernet_keys()),
        batch_size=3,
        skip_invalid=True,
    )
    assert (report.imported, report.written) == (2, True)
    assert [(e.line, e.code) for e in report.errors] == [
        (2, "malformed_line"),
        (3, "duplicate_team"),
        (4, "unknown_integration"),
        (5, "duplicate_team"),
        (6, "malformed_line"),
    ]
    assert secret not in repr(report)


def test_an_import_line_never_shows_its_key() -> None:
    from worker.operations.importer import _Line

    secret = "0f5c1f9e-import-line-key"
    assert secret not in repr(_Line(1, 1000, 1, "ops", secret))


def test_consecutive_batches_share_no_account() -> None:
    # A page as the dispatcher reads it: teams by id, so each account's teams in a run.
    page: list[Any] = [
        SimpleNamespace(id=f"{account}-t{rank:02}", integration_id=account)
        for account in range(1, 9)
        for rank in range(5 + account % 3)
    ]

    batches = dispatch.deal(page, 3)

    assert sorted(team.id for batch in batches for team in batch) == [t.id for t in page]
    assert [len(batch) for batch in batches[:-1]] == [3] * (len(batches) - 1)
    accounts = [{team.integration_id for team in batch} for batch in batches]
    assert all(len(batch) == len(ids) for batch, ids in zip(batches, accounts, strict=True))
    # While every account still has teams to deal (the first five of each: 40 teams,
    # 13 batches of 3 out of 8 accounts), consecutive batches share no account.
    assert all(not accounts[i] & accounts[i + 1] for i in range(40 // 3 - 1))


def test_a_batch_holds_no_more_of_one_account_than_its_turns_in_the_wait() -> None:
    # One account with most of the teams, as in an organization with one Opsgenie
    # account: a batch books every check's turn at once, and a turn further off
    # than OGV_MAX_INLINE_WAIT would send its check back to the queue alone.
    page: list[Any] = [
        SimpleNamespace(id=f"{account}-t{rank:03}", integration_id=account)
        for account, teams in ((1, 200), (2, 10), (3, 10))
        for rank in range(teams)
    ]
    plan = dispatch.Plan(batch_size=100, account_rate=10.0, max_wait=5.0)
    per_account = dispatch._per_account(plan)
    interval = Pacing(10.0).interval_us / 1_000_000
    assert per_account == int(5.0 / interval) and 40 <= per_account <= 50

    batches = dispatch.deal(page, plan.batch_size, per_account)

    assert sorted(team.id for batch in batches for team in batch) == sorted(t.id for t in page)
    most = [max(Counter(team.integration_id for team in batch).values()) for batch in batches]
    assert max(most) == per_account
    assert len(batches) == math.ceil(200 / per_account)  # cut by the big account, no more
    assert dispatch._per_account(dispatch.Plan(account_rate=10.0)) == 0  # no wait given
    assert len(dispatch.deal(page, 100)) == 3  # and without a limit, cut by size alone


def test_countdowns_stay_within_the_window() -> None:
    assert dispatch._spread(600.0, 0, 1000) == 0.0
    assert dispatch._spread(600.0, 500, 1000) == 300.0
    # Teams that came into scope after the count go at the end of the window.
    assert dispatch._spread(600.0, 1500, 1000) == 600.0
    assert dispatch._spread(600.0, 250, 0) == 0.0


def test_the_dispatcher_is_not_held_to_a_checks_time_limit() -> None:
    """A run's dispatch can take longer than a batch of calls: it has limits of its own."""
    from worker.tasks import DISPATCH_SOFT_TIME_LIMIT, DISPATCH_TIME_LIMIT, revalidate

    assert (revalidate.soft_time_limit, revalidate.time_limit) == (
        DISPATCH_SOFT_TIME_LIMIT,
        DISPATCH_TIME_LIMIT,
    )
    assert Settings().task_soft_time_limit < DISPATCH_SOFT_TIME_LIMIT
