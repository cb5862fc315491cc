"""The periodic re-validation: every stored team, streamed, recorded in bulk, spread out.

A run reads the teams a page at a time (keyset pagination: one page in memory,
whatever the size of the table), records a pending request per team in one bulk
INSERT per page, and publishes batch messages whose countdowns spread the run
evenly over the dispatch window, and no earlier than the batch's accounts can
have made their earlier checks of the run at their rate. A team that already
has a check pending or running is skipped: the partial unique index turns its
insert into a no-op.

The order of the messages is the order in which a busy worker runs them (the
broker is first in, first out), so it decides which accounts are called at
the same time, and every account allows only so many calls a second. So pages
are not cut from the teams in id order, where one account's teams sit side by
side (a page of 20,000 teams of accounts of 100 holds only 200 accounts, and
their pacing, not the workers, would set the pace). Instead the dispatcher
takes the accounts a page at a time and reads their teams in rounds: each round
takes the next few teams of every account that has teams left, by keyset on
the (account, label) unique index (`_rounds`). Within a page, `deal` lays the
teams out so that consecutive batches hold different accounts.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from models import (
    IntegrationStatus,
    OrganizationIntegration,
    Requester,
    Team,
    ValidationRequest,
    ValidationRun,
    utcnow,
)
from models.db import array_of
from worker.checks.ratelimit import Pacing
from worker.checks.requests import insert_pending, pending_columns
from worker.settings import Settings

log = logging.getLogger("ogv.dispatch")

PublishBatch = Callable[[uuid.UUID, float], None]
"""Publish one batch message: its id and its countdown in seconds."""


@dataclass(frozen=True)
class Plan:
    batch_size: int = 250
    page_size: int = 5_000
    window: float = 0.0
    """Seconds over which the run's batches are spread; 0 sends them all at once."""
    account_rate: float = 0.0
    """Calls per second per account (OGV_ACCOUNT_RATE); 0 leaves pacing to the workers."""
    max_wait: float | None = None
    """The longest wait for a turn that a worker spends in place (OGV_MAX_INLINE_WAIT).
    With `account_rate`, it bounds how many checks of one account a batch holds."""

    @functools.cached_property
    def turn_interval(self) -> float:
        """Seconds between two turns of one account at the workers' pacing."""
        return Pacing(self.account_rate).interval_us / 1_000_000

    @classmethod
    def from_settings(cls, settings: Settings, window: float | None = None) -> Plan:
        return cls(
            batch_size=settings.batch_size,
            page_size=settings.dispatch_page_size,
            window=settings.dispatch_window if window is None else window,
            account_rate=settings.slowest_account_rate,
            max_wait=settings.max_inline_wait,
        )


PACED_COUNTDOWN_CAP = 60.0
"""The longest countdown pacing alone gives a batch (beyond the window): Settings keeps
the visibility timeout above max(60 s, window) plus the task time limit."""


@dataclass(frozen=True)
class Dispatched:
    run_id: uuid.UUID
    requests: int
    batches: int


def start_run(
    sessions: sessionmaker[Session], requested_by: Requester, organization_id: int | None
) -> uuid.UUID:
    with sessions.begin() as session:
        run = ValidationRun(requested_by=requested_by, organization_id=organization_id)
        session.add(run)
        session.flush()
        return run.id


def dispatch(
    sessions: sessionmaker[Session],
    publish_batch: PublishBatch,
    run_id: uuid.UUID,
    plan: Plan,
) -> Dispatched:
    """Record and publish a request for every team in the run's scope."""
    with sessions() as session:
        run = session.get(ValidationRun, run_id)
        assert run is not None, "start_run() creates the run first"
        scope, requested_by = run.organization_id, run.requested_by
        total = session.scalar(select(func.count()).select_from(_teams(scope).subquery())) or 0
    batches = teams = 0
    turns: Counter[int] = Counter()  # checks dispatched so far per account: O(accounts)
    per_account = _per_account(plan)
    for page in _rounds(sessions, scope, plan.page_size, first_page=plan.batch_size):
        groups = deal(page, plan.batch_size, per_account)
        ids = [uuid.uuid4() for _ in groups]
        due = []
        for group in groups:
            due.append(max(_spread(plan.window, teams, total), _paced(group, turns, plan)))
            teams += len(group)
        with sessions.begin() as session:
            _record(session, run_id, requested_by, list(zip(ids, due, groups, strict=True)))
        for batch_id, countdown in zip(ids, due, strict=True):
            publish_batch(batch_id, countdown)
        batches += len(groups)
    with sessions.begin() as session:
        requests = (
            session.scalar(select(func.count()).where(ValidationRequest.run_id == run_id)) or 0
        )
        session.execute(
            update(ValidationRun)
            .where(ValidationRun.id == run_id)
            .values(total=requests, dispatched_at=utcnow())
        )
    log.info(
        "dispatch.finished", extra={"run_id": str(run_id), "requests": requests, "batches": batches}
    )
    return Dispatched(run_id, requests, batches)


def _spread(window: float, before: int, total: int) -> float:
    """A batch's countdown within the window: the share of the run's checks before it
    (batches differ in size). Teams that came into scope after the count go at the end
    of the window, never past it: the broker's visibility timeout allows no more."""
    return window * min(1.0, before / total) if total else 0.0


class TeamRef(NamedTuple):
    """What the dispatcher needs of a team to record its request."""

    id: str
    organization_id: int
    integration_id: int


def _teams(organization_id: int | None) -> Any:
    return (
        select(Team.id)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .where(*_in_scope(organization_id))
    )


def _in_scope(organization_id: int | None) -> list[Any]:
    scope = [OrganizationIntegration.status == IntegrationStatus.ACTIVE]
    if organization_id is not None:
        scope.append(OrganizationIntegration.organization_id == organization_id)
    return scope


def _rounds(
    sessions: sessionmaker[Session], organization_id: int | None, page_size: int, first_page: int
) -> Iterator[list[TeamRef]]:
    """The teams in scope, a page at a time, each page taking a few teams of many accounts.

    Accounts (organization integrations) are read `page_size` at a time by id.
    Their teams are then read in rounds: a round takes, for every account that
    still has teams, its next `page_size // accounts` teams by label. Memory holds
    one page of teams and one page of accounts with the last label read of each.

    The run's first page holds `first_page` teams (or one team of each account,
    if there are more accounts than that), and each next page twice as many, up
    to `page_size`: the first batches go out as soon as a small page is recorded,
    not after a whole page of `page_size` teams.
    """
    after_link, ramp = 0, first_page
    while accounts := _accounts(sessions, organization_id, after_link, page_size):
        after_link = accounts[-1][0]
        owners = {link_id: (org, integration) for link_id, org, integration in accounts}
        last_label = dict.fromkeys(owners, "")
        while last_label:
            take = max(1, min(ramp, page_size) // len(last_label))
            ramp *= 2
            with sessions() as session:
                found = _next_teams(session, last_label, take)
            read: Counter[int] = Counter()
            page = []
            for link_id, team_id, label in found:
                last_label[link_id] = label  # in label order within an account
                read[link_id] += 1
                page.append(TeamRef(team_id, *owners[link_id]))
            for link_id in [link for link in last_label if read[link] < take]:
                del last_label[link_id]  # fewer than asked for: none left
            if page:
                yield page


def _accounts(
    sessions: sessionmaker[Session], organization_id: int | None, after: int, size: int
) -> list[tuple[int, int, int]]:
    with sessions() as session:
        rows = session.execute(
            select(
                OrganizationIntegration.id,
                OrganizationIntegration.organization_id,
                OrganizationIntegration.integration_id,
            )
            .where(OrganizationIntegration.id > after, *_in_scope(organization_id))
            .order_by(OrganizationIntegration.id)
            .limit(size)
        )
        return [(link_id, org, integration) for link_id, org, integration in rows]


def _next_teams(
    session: Session, last_label: dict[int, str], take: int
) -> list[tuple[int, str, str]]:
    """For each account, the `take` teams after its last label read: (account, id, label).

    On PostgreSQL one statement does it, a LATERAL subquery per account over the
    arrays of accounts and labels; elsewhere (the embedded SQLite) one query per
    account. Both walk the (account, label) unique index. The rows come back in
    label order within each account.
    """
    next_by_label = select(Team.id, Team.label).order_by(Team.label).limit(take)
    if session.get_bind().dialect.name == "postgresql":
        cursors = (
            func.unnest(
                array_of(Team.organization_integration_id, last_label),
                array_of(Team.label, last_label.values()),
            )
            .table_valued("link_id", "last_label")
            .render_derived()
        )
        following = next_by_label.where(
            Team.organization_integration_id == cursors.c.link_id,
            Team.label > cursors.c.last_label,
        ).lateral()
        rows = session.execute(
            select(cursors.c.link_id, following.c.id, following.c.label)
            .select_from(cursors)
            .join(following, true())
            .order_by(cursors.c.link_id, following.c.label)
        )
        return [(link_id, team_id, label) for link_id, team_id, label in rows]
    one_account = next_by_label.where(
        Team.organization_integration_id == bindparam("link_id"),
        Team.label > bindparam("last_label"),
    )
    return [
        (link_id, team_id, label)
        for link_id, last in last_label.items()
        for team_id, label in session.execute(one_account, {"link_id": link_id, "last_label": last})
    ]


def _paced(group: Sequence[TeamRef], turns: Counter[int], plan: Plan) -> float:
    """When the accounts of `group` can have made their earlier checks of the run.

    An account's checks are spread over many batches, and with a short window
    every batch would reach the workers at once, each holding a worker while its
    calls wait their turn behind the batches before it. Due when its accounts'
    turns come (their checks so far, at the workers' pacing interval), a batch
    that arrives early waits in the worker's timer instead, and idle workers
    serve other accounts meanwhile.
    """
    if plan.account_rate <= 0:
        return 0.0
    accounts = Counter(team.integration_id for team in group)
    due = max(turns[account] for account in accounts) * plan.turn_interval
    turns.update(accounts)
    return min(due, max(plan.window, PACED_COUNTDOWN_CAP))


def _per_account(plan: Plan) -> int:
    """The most checks of one account a batch may hold (0: any number): the turns
    that come within `max_wait`. A batch books all its turns at once, and a check
    whose turn is further off than that goes back to the queue alone."""
    if plan.account_rate <= 0 or plan.max_wait is None:
        return 0
    return max(1, int(plan.max_wait / plan.turn_interval))


def deal(page: Sequence[TeamRef], batch_size: int, per_account: int = 0) -> list[list[TeamRef]]:
    """Cut a page into batches that keep each account's teams as far apart as they can.

    The teams are laid out by their rank within their account, then by account
    (every account's first team, then every account's second, ...), and cut in
    order. Consecutive batches then share no account as long as at least twice
    as many accounts as a batch holds teams still have teams to deal, so the
    batches that the workers run at the same time do not queue behind the same
    accounts' pacing. (An account with far more teams than the others ends the
    page alone, as it must.) A batch is also cut when one account would have more
    than `per_account` teams in it, if that is given.
    """
    ranks: Counter[int] = Counter()
    laid_out = []
    for team in page:
        account = team.integration_id
        laid_out.append((ranks[account], account, team))
        ranks[account] += 1
    laid_out.sort(key=lambda entry: (entry[0], entry[1]))
    batches: list[list[TeamRef]] = []
    batch: list[TeamRef] = []
    in_batch: Counter[int] = Counter()
    for _, account, team in laid_out:
        if len(batch) == batch_size or (per_account and in_batch[account] == per_account):
            batches.append(batch)
            batch, in_batch = [], Counter()
        batch.append(team)
        in_batch[account] += 1
    if batch:
        batches.append(batch)
    return batches


def _record(
    session: Session,
    run_id: uuid.UUID,
    requested_by: Requester,
    batches: list[tuple[uuid.UUID, float, Sequence[TeamRef]]],
) -> None:
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for batch_id, countdown, teams in batches:
        # The sweeper must not republish a batch before its countdown is due.
        due_at = now + timedelta(seconds=countdown)
        rows += (
            {
                "organization_id": team.organization_id,
                "integration_id": team.integration_id,
                "team_id": team.id,
                "batch_id": batch_id,
                "next_attempt_at": due_at,
            }
            for team in teams
        )
    insert_pending(session, rows, **pending_columns(requested_by, now), run_id=run_id)


def progress(session: Session, run_id: uuid.UUID) -> dict[str, int]:
    """How many of the run's requests are in each state, and with each outcome."""
    counts: dict[str, int] = {}
    for state, outcome, count in session.execute(
        select(ValidationRequest.state, ValidationRequest.outcome, func.count())
        .where(ValidationRequest.run_id == run_id)
        .group_by(ValidationRequest.state, ValidationRequest.outcome)
    ):
        key = outcome.value if outcome is not None else state.value
        counts[key] = counts.get(key, 0) + count
    return counts
