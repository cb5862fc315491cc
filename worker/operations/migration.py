"""Moving to JSM Operations: probing which keys work there, and moving an integration.

`ogv migration report` runs `probe_fleet`: every team of an integration on an
Opsgenie platform is asked on JSM Ops with the read-only alerts probe
(`rules.jsm_readiness`), the way re-validation checks a fleet:

- teams are read a page at a time (keyset on the team id: one page in memory);
- a page's calls book their turns in each account's JSM pacing in one round
  trip (the `AccountGate` the workers share, key `jsm-ops:search:integration:{id}`)
  and run concurrently, at most `concurrency` at once;
- the page's answers are written in one short transaction (`readiness.record`),
  and no transaction is open while JSM Ops is asked.

`ogv integration migrate` runs `move_integration`: the Integration row, which is one
organization's own (SPEC §8: another organization naming the same account has a
row of its own, never moved by this), moves to JSM Ops once every team's key works
there as recorded (or with `force`). Every team's `key_version` grows, so a check
that resolved its target on the old host before the switch cannot write its
answer over the new one (`worker.checks.records`), and the move is one
`IntegrationMove` row of history. Refusals are `MigrationRefused`, one line each.
Keys are never printed or logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Integration, IntegrationMove, OrganizationIntegration, Team, utcnow
from models.crypto import UndecryptableKey
from models.integration import JSM_FAILS, JSM_UNKNOWN, JSM_WORKS, OPSGENIE_PROVIDER
from worker import readiness
from worker.checks.pipeline import Collaborators
from worker.checks.ratelimit import Pacing
from worker.checks.rules import (
    Target,
    jsm_readiness,
)
from worker.platforms import JSM_OPS, Platform, UnknownPlatform, get_platform
from worker.platforms.baseurl import BaseUrlError, check_allowed
from worker.readiness import Probed, Readiness

if TYPE_CHECKING:
    from worker.checks.runtime import Runtime
    from worker.settings import Settings

log = logging.getLogger("ogv.migration")

MOVES_TO: tuple[str, ...] = (JSM_OPS.name,)
"""Where an integration on an Opsgenie platform may move."""

PAUSE_ALLOWANCE = 60.0
"""Seconds the report waits, on top of a page's turns, for a paused account: Opsgenie's
longest throttle period. The CLI has no queue to send a check back to."""


class MigrationRefused(ValueError):
    """Raised when a report or a move cannot be done as asked; `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- where keys go -------------------------------------------------------------------------


def jsm_base_url(base_urls: Mapping[str, str], allowed_base_urls: Sequence[str]) -> str:
    """The JSM Ops base URL the deployment uses (`OGV_JSM_OPS_BASE_URL`), if it is allowed.

    Checked before anything is sent or moved: a key only ever goes to an allowed host.
    """
    url = base_urls[JSM_OPS.name]
    try:
        return check_allowed(url, allowed_base_urls)
    except BaseUrlError as exc:
        raise MigrationRefused(
            "base_url_not_allowed",
            f"the {JSM_OPS.title} base URL {url} is not on OGV_ALLOWED_BASE_URLS; "
            "add it there first",
        ) from exc


# -- the report's probes -------------------------------------------------------------------


def collaborators(settings: Settings, runtime: Runtime) -> Collaborators:
    """What `probe_fleet` needs, on this process's runtime (its gate is Redis-shared
    when Redis is configured). A turn may be a whole page of one account away."""
    # The report asks JSM Ops with the alerts probe: its turns come at that domain's rate.
    interval = Pacing(settings.rate_for("alerts"), settings.account_burst).interval_us / 1e6
    return dataclasses.replace(
        Collaborators.from_settings(settings, runtime),
        max_wait=settings.batch_size * interval + PAUSE_ALLOWANCE,
    )


def teams_to_probe(session: Session, organization_id: int | None = None) -> int:
    """How many teams `probe_fleet` asks about; MigrationRefused for an unknown organization."""
    if organization_id is not None:
        known = session.scalar(
            select(OrganizationIntegration.id)
            .where(OrganizationIntegration.organization_id == organization_id)
            .limit(1)
        )
        if known is None:
            raise MigrationRefused(
                "not_found", f"organization {organization_id} has no integrations"
            )
    query = (
        select(func.count(Team.id))
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
        .where(*readiness.in_scope(organization_id))
    )
    return session.scalar(query) or 0


@dataclass(frozen=True)
class _Asked:
    team_id: str
    key_version: int
    target: Target | None
    """None: the key cannot be decrypted, so it is not sent (`unknown`)."""


def probe_fleet(
    deps: Collaborators,
    *,
    organization_id: int | None = None,
    page_size: int = 250,
    on_probed: Callable[[int], None] = lambda teams: None,
) -> Probed:
    """Ask JSM Ops about every team in scope (of one organization, if given) and record it.

    `on_probed(n)` is told as teams are answered (from the runtime's loop thread).
    Returns the tally of this run's answers.
    """
    tally: Counter[str] = Counter()
    after = ""
    while True:
        with deps.sessions() as session:
            page = _page(session, after, organization_id, page_size, deps)
        if not page:
            return Probed(
                sum(tally.values()),
                tally[JSM_WORKS],
                tally[JSM_FAILS],
                tally[JSM_UNKNOWN],
            )
        after = page[-1].team_id
        checked_at = utcnow()
        answers = deps.run(_probe_page(page, deps, on_probed))
        with deps.sessions.begin() as session:
            readiness.record(session, answers, checked_at)
        tally.update(answer.jsm_ops for answer in answers)


def _page(
    session: Session, after: str, organization_id: int | None, size: int, deps: Collaborators
) -> list[_Asked]:
    """The next `size` teams in scope after team id `after`, with what a probe needs."""
    rows = session.execute(
        select(
            Team.id,
            Team.label,
            Team.encrypted_key,
            Team.key_version,
            Team.status,
            Integration.id.label("integration_id"),
            Integration.account_name,
            Integration.base_url,
            Integration.platform,
            Integration.probe,
            OrganizationIntegration.organization_id,
        )
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
        .where(Team.id > after, *readiness.in_scope(organization_id))
        .order_by(Team.id)
        .limit(size)
    )
    return [_asked(row, deps) for row in rows]


def _asked(row: Any, deps: Collaborators) -> _Asked:
    try:
        key = deps.vault.decrypt(row.encrypted_key)
    except UndecryptableKey:
        return _Asked(row.id, row.key_version, None)
    platform = get_platform(row.platform)
    target = Target(
        team_id=row.id,
        label=row.label,
        account=row.account_name,
        integration_id=row.integration_id,
        base_url=row.base_url,
        key=key,
        key_version=row.key_version,
        platform=platform,
        probe=platform.probe_for(row.probe, deps.options.default_probe),
        organization_id=row.organization_id,
        status=row.status,
    )
    return _Asked(row.id, row.key_version, target)


async def _probe_page(
    page: Sequence[_Asked], deps: Collaborators, on_probed: Callable[[int], None]
) -> list[Readiness]:
    loop = asyncio.get_running_loop()
    gate_keys = [a.target.gate_key_on(JSM_OPS.name) for a in page if a.target is not None]
    try:
        booked: dict[str, list[float]] | None = await deps.gate.reserve(Counter(gate_keys))
    except RedisError:
        booked = None  # each call books its own turn, and says `unknown` if it cannot
    booked_at = loop.time()
    limit = asyncio.Semaphore(deps.concurrency)

    async def one(asked: _Asked) -> Readiness:
        answer = JSM_UNKNOWN
        if asked.target is not None:
            turn = None
            if booked is not None:
                turn = booked_at + booked[asked.target.gate_key_on(JSM_OPS.name)].pop()
                if 0 < turn - booked_at <= deps.max_wait:
                    # Wait for the turn before taking a slot: a call sleeping in the
                    # limit keeps a slot idle while other accounts' turns have come.
                    await asyncio.sleep(turn - loop.time())
            async with limit:
                answer = await jsm_readiness(
                    asked.target, deps.client, deps.gate, deps.options, deps.max_wait, turn=turn
                )
        on_probed(1)
        return Readiness(asked.team_id, asked.key_version, answer)

    return list(await asyncio.gather(*(one(asked) for asked in page)))


# -- the move ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """An integration's move to another platform: done, or what a dry run would do."""

    integration_id: int
    organization_id: int
    account: str
    from_platform: str
    to_platform: str
    from_base_url: str
    to_base_url: str
    teams: int
    """Teams of the integration's organization link (active)."""
    teams_ready: int
    """Of those, the teams whose key works on the new platform, as last probed."""
    forced: bool
    """Moved although not every team was ready (`--force` was needed)."""
    dry_run: bool
    moved_at: datetime | None
    """None on a dry run."""


def move_integration(
    session: Session,
    integration_id: int,
    to: str,
    *,
    base_urls: Mapping[str, str],
    allowed_base_urls: Sequence[str],
    force: bool = False,
    dry_run: bool = False,
    organization_id: int | None = None,
) -> Move:
    """Move an integration to platform `to` (JSM Ops), or raise MigrationRefused.

    Refused: an unknown integration (`not_found`); one already there
    (`already_migrated`); a platform it cannot move to (`invalid_platform`); a
    base URL off the allowlist (`base_url_not_allowed`); the same account already
    installed at that base URL by the same organization (`duplicate_integration`);
    teams not ready, without `force` (`not_ready`); with `organization_id`, an
    integration that is not that organization's (`not_found`). An integration is one
    organization's, so a move never touches another organization's row. A dry run
    checks all of it and writes nothing.
    """
    integration = session.scalars(
        select(Integration)
        .where(Integration.id == integration_id, Integration.provider == OPSGENIE_PROVIDER)
        .with_for_update()
    ).first()
    if integration is None:
        raise MigrationRefused("not_found", f"integration {integration_id} does not exist")
    if organization_id is not None and integration.organization_id != organization_id:
        raise MigrationRefused(
            "not_found",
            f"integration {integration_id} is not organization {organization_id}'s; "
            f"`ogv migration report --org {organization_id}` lists its integrations",
        )
    target = _destination(integration, to)
    url = jsm_base_url(base_urls, allowed_base_urls)
    _refuse_duplicate(session, integration, url)
    teams, ready = readiness.of_integration(session, integration.id)
    if ready < teams and not force:
        raise MigrationRefused(
            "not_ready",
            f"{teams - ready} of {teams} teams of integration {integration.id} "
            f"({integration.account_name!r}) do not work on {target.title} yet, as last "
            "probed; run `ogv migration report` first, or pass --force",
        )
    move = Move(
        integration_id=integration.id,
        organization_id=integration.organization_id,
        account=integration.account_name,
        from_platform=integration.platform,
        to_platform=target.name,
        from_base_url=integration.base_url,
        to_base_url=url,
        teams=teams,
        teams_ready=ready,
        forced=ready < teams,
        dry_run=dry_run,
        moved_at=None if dry_run else utcnow(),
    )
    if not dry_run:
        _write_move(session, integration, move)
    return move


def _destination(integration: Integration, to: str) -> Platform:
    try:
        target = get_platform(to)
    except UnknownPlatform as exc:
        raise MigrationRefused("invalid_platform", str(exc)) from exc
    if integration.platform == target.name:
        raise MigrationRefused(
            "already_migrated",
            f"integration {integration.id} ({integration.account_name!r}) is already on "
            f"{target.name}",
        )
    if target.name not in MOVES_TO or not get_platform(integration.platform).is_opsgenie:
        raise MigrationRefused(
            "invalid_platform",
            f"integration {integration.id} is on {integration.platform}; an integration "
            f"on Opsgenie can move only to {', '.join(MOVES_TO)}",
        )
    return target


def _refuse_duplicate(session: Session, integration: Integration, url: str) -> None:
    other = session.scalar(
        select(Integration.id).where(
            Integration.organization_id == integration.organization_id,
            Integration.provider == integration.provider,
            Integration.account_name == integration.account_name,
            Integration.base_url == url,
        )
    )
    if other is not None:
        raise _duplicate(integration, other)


def _duplicate(integration: Integration, other: int | None) -> MigrationRefused:
    which = f"integration {other}" if other is not None else "another integration"
    return MigrationRefused(
        "duplicate_integration",
        f"organization {integration.organization_id} already installed account "
        f"{integration.account_name!r} at that base URL as {which}; integration "
        f"{integration.id} cannot move onto it",
    )


def _write_move(session: Session, integration: Integration, move: Move) -> None:
    assert move.moved_at is not None
    links = select(OrganizationIntegration.id).where(
        OrganizationIntegration.integration_id == integration.id
    )
    try:
        with session.begin_nested():
            integration.base_url = move.to_base_url
            integration.platform = move.to_platform
            integration.probe = None  # the new platform's default: alerts on JSM Ops
            # A new key version for every team, even of disabled links: a check that
            # resolved the old host before the switch cannot write its answer now.
            # Where the key worked instead was said of the old platform.
            session.execute(
                update(Team)
                .where(Team.organization_integration_id.in_(links))
                .values(key_version=Team.key_version + 1, works_on=None)
                .execution_options(synchronize_session=False)
            )
            session.add(
                IntegrationMove(
                    integration_id=integration.id,
                    from_platform=move.from_platform,
                    to_platform=move.to_platform,
                    from_base_url=move.from_base_url,
                    to_base_url=move.to_base_url,
                    teams=move.teams,
                    teams_ready=move.teams_ready,
                    forced=move.forced,
                    moved_at=move.moved_at,
                )
            )
            session.flush()
    except IntegrityError as exc:
        # The same account was installed at that base URL since we looked.
        raise _duplicate(integration, None) from exc


def log_move(move: Move) -> None:
    """The `integration.migrated` event, once the move is committed (ids, never keys)."""
    log.info(
        "integration.migrated",
        extra={
            "integration_id": move.integration_id,
            "account": move.account,
            "from_platform": move.from_platform,
            "to_platform": move.to_platform,
            "teams": move.teams,
            "teams_ready": move.teams_ready,
            "forced": move.forced,
        },
    )


__all__ = [
    "MOVES_TO",
    "MigrationRefused",
    "Move",
    "collaborators",
    "jsm_base_url",
    "log_move",
    "move_integration",
    "probe_fleet",
    "teams_to_probe",
]
