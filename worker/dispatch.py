"""The periodic re-validation: every stored team, streamed, recorded in bulk, spread out.

A run pages through the teams by id (keyset pagination: one page in memory at a
time, whatever the size of the table), records a pending request per team in one
bulk INSERT per page, and publishes batch messages whose countdowns spread the
run evenly over the dispatch window, and no earlier than the batch's accounts
can have made their earlier checks of the run at their rate. A team that
already has a check pending or running is skipped: the partial unique index
turns its insert into a no-op.

Within a page, teams are dealt into batches by account (`deal`). Teams sort by
id, and ids start with their organization integration, so a page holds long
runs of one account; dealt out, every batch holds many accounts and consecutive
batches hold different ones, so no batch waits on one account's rate limit and
the batches running at once do not wait on the same accounts.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, func, select, update
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
from worker.records import Ask, in_index_order, insert_skipping_active, request_row

log = logging.getLogger("ogv.dispatch")

PublishBatch = Callable[[uuid.UUID, float], None]
"""Publish one batch message: its id and its countdown in seconds."""


@dataclass(frozen=True)
class Plan:
    batch_size: int = 100
    page_size: int = 5_000
    window: float = 0.0
    """Seconds over which the run's batches are spread; 0 sends them all at once."""
    account_rate: float = 0.0
    """Calls per second per account (OGV_ACCOUNT_RATE); 0 leaves pacing to the workers."""


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
    spacing = plan.window / max(1, math.ceil(total / plan.batch_size))
    after, batches = "", 0
    turns: Counter[int] = Counter()  # checks dispatched so far per account: O(accounts)
    while page := _page(sessions, scope, after, plan.page_size):
        after = page[-1].id
        groups = deal(page, plan.batch_size)
        ids = [uuid.uuid4() for _ in groups]
        due = [
            max((batches + i) * spacing, _paced(group, turns, plan))
            for i, group in enumerate(groups)
        ]
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


def _teams(organization_id: int | None) -> Any:
    query = (
        select(
            Team.id, OrganizationIntegration.organization_id, OrganizationIntegration.integration_id
        )
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .where(OrganizationIntegration.status == IntegrationStatus.ACTIVE)
    )
    if organization_id is not None:
        query = query.where(OrganizationIntegration.organization_id == organization_id)
    return query


def _page(
    sessions: sessionmaker[Session], organization_id: int | None, after: str, size: int
) -> Sequence[Row[Any]]:
    with sessions() as session:
        return session.execute(
            _teams(organization_id).where(Team.id > after).order_by(Team.id).limit(size)
        ).all()


def _paced(group: Sequence[Row[Any]], turns: Counter[int], plan: Plan) -> float:
    """When the accounts of `group` can have made their earlier checks of the run.

    A page holds long runs of few accounts, and with a short window every batch
    would reach the workers at once, each holding a worker while its calls wait
    their turn behind the batches before it. Sent when its turn comes, a batch
    lets the workers serve other pages, and so other accounts, meanwhile.
    """
    if plan.account_rate <= 0:
        return 0.0
    accounts = Counter(team.integration_id for team in group)
    due = max(turns[account] for account in accounts) / plan.account_rate
    turns.update(accounts)
    return min(due, max(plan.window, PACED_COUNTDOWN_CAP))


def deal(page: Sequence[Row[Any]], batch_size: int) -> list[Sequence[Row[Any]]]:
    """Cut a page into batches that keep each account's teams as far apart as they can.

    The teams are laid out by their rank within their account, then by account
    (every account's first team, then every account's second, ...), and cut in
    order. Consecutive batches then share no account as long as at least twice
    as many accounts as a batch holds teams still have teams to deal, so the
    batches that the workers run at the same time do not queue behind the same
    accounts' pacing. (An account with far more teams than the others ends the
    page alone, as it must.)
    """
    ranks: Counter[int] = Counter()
    laid_out = []
    for team in page:
        account = team.integration_id
        laid_out.append((ranks[account], account, team))
        ranks[account] += 1
    laid_out.sort(key=lambda entry: (entry[0], entry[1]))
    ordered = [team for _, _, team in laid_out]
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _record(
    session: Session,
    run_id: uuid.UUID,
    requested_by: Requester,
    batches: list[tuple[uuid.UUID, float, Sequence[Row[Any]]]],
) -> None:
    now = utcnow()
    rows = [
        request_row(
            Ask(team.organization_id, team.integration_id, team.id),
            requested_by,
            now,
            run_id=run_id,
            batch_id=batch_id,
            # The sweeper must not republish a batch before its countdown is due.
            next_attempt_at=now + timedelta(seconds=countdown),
        )
        for batch_id, countdown, teams in batches
        for team in teams
    ]
    session.execute(insert_skipping_active(session), in_index_order(rows))


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
