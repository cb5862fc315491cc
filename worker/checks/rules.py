"""The validation rules of SPEC §3: which records a check needs, and what answers mean.

Plain functions over a session and a client, testable without Celery:
`resolve()` decides `invalid_integration` and `invalid_team` from the database
alone, `probe()` asks Opsgenie and turns its verdict into a `Result`.
Messages name the account and the team label, never the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import (
    Integration,
    IntegrationStatus,
    OrganizationIntegration,
    Outcome,
    Team,
    TeamStatus,
)
from models.crypto import KeyVault, UndecryptableKey
from models.db import one_of
from models.integration import JSM_FAILS, JSM_UNKNOWN, JSM_WORKS, OPSGENIE_PROVIDER
from worker import metrics
from worker.checks.opsgenie import AccountPaused, OpsgenieClient, OpsgenieError, Throttled, Verdict
from worker.checks.ratelimit import AccountGate, gate_key
from worker.platforms import JSM_OPS, PLATFORMS, Platform, ProbeName, get_platform
from worker.platforms.baseurl import BaseUrlError
from worker.platforms.sunset import Deadline, account_deadline
from worker.platforms.sunset import today as sunset_today

if TYPE_CHECKING:
    from worker.settings import Settings


def _official_base_urls() -> dict[str, str]:
    return {name: platform.official_base_url for name, platform in PLATFORMS.items()}


@dataclass(frozen=True)
class CheckOptions:
    """How checks use the platforms, as the deployment configured them."""

    default_probe: ProbeName = "authenticate"
    """The probe of integrations on an Opsgenie platform that chose none (`OGV_PROBE`)."""
    base_urls: dict[str, str] = field(default_factory=_official_base_urls)
    """Where each platform is reached, by name (official URLs, or their overrides)."""
    locate_keys: bool = False
    """Look up where a key that just turned invalid works instead (`OGV_LOCATE_KEYS`)."""
    migration_probe: bool = False
    """Also probe JSM Operations on periodic re-validation (`OGV_MIGRATION_PROBE`)."""
    today: Callable[[], date] = sunset_today
    """Today's UTC day: whether an account's deadline has passed (tests pass another)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckOptions:
        return cls(
            default_probe=settings.probe,
            base_urls={n: settings.platform_base_url(p) for n, p in PLATFORMS.items()},
            locate_keys=settings.locate_keys,
            migration_probe=settings.migration_probe,
        )


@dataclass(frozen=True)
class Target:
    """Everything one probe needs, read from the database at the start of an attempt."""

    team_id: str
    label: str
    account: str
    integration_id: int
    base_url: str
    key: str
    key_version: int
    platform: Platform
    probe: ProbeName
    organization_id: int
    """The organization whose team it is: the guard counts organizations, never accounts."""
    status: TeamStatus = TeamStatus.UNKNOWN
    """The team's status when the attempt started."""
    deadline: Deadline | None = None
    """The account's last day on Opsgenie (`worker.platforms.sunset`); None elsewhere."""

    @property
    def gate_key(self) -> str:
        """The account's bucket (one Integration row, which is one organization's: an
        account name is free text, so pacing never goes by it) in the domain of its
        probe."""
        return gate_key(self.platform.name, self.probe, self.integration_id)

    def gate_key_on(self, platform: str) -> str:
        """The account's pacing on another platform, for the alerts probe of its lookups
        and readiness probes."""
        return gate_key(platform, "alerts", self.integration_id)

    def __repr__(self) -> str:  # the key must not reach a log through a repr
        return f"Target(team_id={self.team_id!r}, account={self.account!r})"


@dataclass(frozen=True)
class Result:
    """One attempt's conclusion: an outcome and a message fit for a person."""

    outcome: Outcome
    message: str
    http_status: int | None = None
    error_code: str | None = None
    works_on: tuple[str, ...] = ()
    """Other platforms where the key works, when it was refused here."""
    rate_limit_state: str | None = None
    rate_limit_reason: str | None = None
    jsm_ops: str | None = None
    """Whether the key works on JSM Operations (`jsm_readiness`), when it was asked."""


class Asked(Protocol):
    """What a request asks about: the fields of a claimed validation request."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def organization_id(self) -> int: ...
    @property
    def integration_id(self) -> int: ...
    @property
    def team_id(self) -> str: ...


def resolve_many(
    session: Session,
    requests: Sequence[Asked],
    vault: KeyVault,
    default_probe: ProbeName = "authenticate",
) -> dict[uuid.UUID, Target | Result]:
    """For each request, what its check needs, or its outcome without calling Opsgenie.

    SPEC §3, steps 1 and 2, for many requests in two queries: the organizations'
    links to their integrations, then the teams.
    """
    pairs = {(r.organization_id, r.integration_id) for r in requests}
    links = (
        {
            (link.organization_id, link.integration_id): link
            for link in session.connection().execute(
                select(
                    OrganizationIntegration.organization_id,
                    OrganizationIntegration.id.label("link_id"),
                    OrganizationIntegration.status,
                    Integration.id.label("integration_id"),
                    Integration.account_name,
                    Integration.base_url,
                    Integration.platform,
                    Integration.probe,
                    Integration.migrated_on,
                    Integration.switched_off_on,
                )
                .join(
                    OrganizationIntegration,
                    # An integration is its organization's own: a link to another's
                    # row (none is made, SPEC §8) finds nothing.
                    (OrganizationIntegration.integration_id == Integration.id)
                    & (OrganizationIntegration.organization_id == Integration.organization_id),
                )
                .where(
                    Integration.provider == OPSGENIE_PROVIDER,
                    # Every pair asked about, and maybe a few more: each org with each
                    # integration asked about. The lookup below takes the pairs asked.
                    one_of(session, OrganizationIntegration.organization_id, {o for o, _ in pairs}),
                    one_of(session, Integration.id, {i for _, i in pairs}),
                )
            )
        }
        if pairs
        else {}
    )
    wanted = {r.team_id for r in requests if r.team_id}
    teams = (
        {
            team.id: team
            for team in session.connection().execute(
                select(
                    Team.id,
                    Team.organization_integration_id,
                    Team.label,
                    Team.encrypted_key,
                    Team.key_version,
                    Team.status,
                ).where(one_of(session, Team.id, wanted))
            )
        }
        if wanted
        else {}
    )
    return {r.id: _resolve_one(r, links, teams, vault, default_probe) for r in requests}


def resolve(
    session: Session, request: Asked, vault: KeyVault, default_probe: ProbeName = "authenticate"
) -> Target | Result:
    """`resolve_many` for one request."""
    return resolve_many(session, [request], vault, default_probe)[request.id]


def _resolve_one(
    request: Asked,
    links: Mapping[tuple[int, int], Any],  # rows of the link query
    teams: Mapping[str, Any],  # rows of the team query
    vault: KeyVault,
    default_probe: ProbeName,
) -> Target | Result:
    link = links.get((request.organization_id, request.integration_id))
    if link is not None and link.status != IntegrationStatus.ACTIVE:
        return Result(
            Outcome.INVALID_INTEGRATION,
            f"The Opsgenie integration {request.integration_id} of organization "
            f"{request.organization_id} is disabled: enable it to check its teams.",
            error_code="integration_disabled",
        )
    if link is None:
        return Result(
            Outcome.INVALID_INTEGRATION,
            f"The Opsgenie integration {request.integration_id} does not exist "
            f"for organization {request.organization_id}.",
        )
    team = teams.get(request.team_id) if request.team_id else None
    if team is None or team.organization_integration_id != link.link_id:
        return Result(
            Outcome.INVALID_TEAM,
            # The id asked about is not repeated: it may be a key pasted into the wrong field.
            f"No team with that id belongs to the account {link.account_name!r} of "
            f"integration {request.integration_id}; team ids look like 2-payments.",
        )
    try:
        key = vault.decrypt(team.encrypted_key)
    except UndecryptableKey:
        return Result(
            Outcome.ERROR,
            f"The stored key of team {team.label!r} cannot be decrypted with the "
            "configured encryption keys.",
            error_code="undecryptable_key",
        )
    platform = get_platform(link.platform)
    return Target(
        team_id=team.id,
        label=team.label,
        account=link.account_name,
        integration_id=link.integration_id,
        base_url=link.base_url,
        key=key,
        key_version=team.key_version,
        platform=platform,
        probe=platform.probe_for(link.probe, default_probe),
        organization_id=link.organization_id,
        status=team.status,
        deadline=account_deadline(platform, link.migrated_on, link.switched_off_on),
    )


MAX_REBOOKINGS = 10


async def probe(
    target: Target,
    client: OpsgenieClient,
    gate: AccountGate,
    *,
    turn: float | None = None,
    max_wait: float = 5.0,
    options: CheckOptions | None = None,
) -> Result:
    """Ask the target's platform about its key; raise TransientError to be retried.

    The call waits its turn in the account's pacing: `turn` (event-loop time)
    when the caller booked it already (a batch books all its calls at once), else
    one call is booked here. A turn further off than `max_wait` (a paused account)
    is not waited for in place: AccountPaused sends the check back to the queue.
    A 429 pauses the account for every worker before the error goes up. A key
    that has just turned invalid on Opsgenie is looked up elsewhere (`locate`).
    """
    options = options or CheckOptions()
    await wait_for_turn(target.gate_key, gate, turn, max_wait)
    try:
        verdict = await client.check_key(
            target.base_url, target.key, platform=target.platform, probe=target.probe
        )
    except Throttled as exc:
        if exc.problem is not None:
            metrics.throttle_fallback(exc.problem)
        await gate.pause(target.gate_key, exc.retry_after or 1.0)
        raise
    except BaseUrlError:
        # The allowlist changed since the account was added: never send the key.
        return Result(
            Outcome.ERROR,
            f"The base URL of {target.platform.title} account {target.account!r} is no longer "
            "allowed; the key was not sent. Add it to OGV_ALLOWED_BASE_URLS to check it.",
            error_code="base_url_not_allowed",
        )
    result = judge(target, verdict, options.today())
    if _worth_locating(target, verdict, options):
        works_on = await locate(target, client, gate, options, max_wait)
        if works_on:
            result = dataclasses.replace(
                result, message=f"{result.message} {_where(works_on)}", works_on=works_on
            )
    if options.migration_probe and target.platform.is_opsgenie:
        readiness = await jsm_readiness(target, client, gate, options, max_wait)
        result = dataclasses.replace(result, jsm_ops=readiness)
    return result


def _worth_locating(target: Target, verdict: Verdict, options: CheckOptions) -> bool:
    """Only a key that *turned* invalid on Opsgenie, and could work elsewhere, is looked up."""
    return (
        options.locate_keys
        and verdict.outcome is Outcome.INVALID_KEY
        and verdict.reason != "malformed_key"  # a malformed key works nowhere
        and target.platform.is_opsgenie
        and target.status is not TeamStatus.INVALID_KEY
    )


async def locate(
    target: Target,
    client: OpsgenieClient,
    gate: AccountGate,
    options: CheckOptions,
    max_wait: float = 5.0,
) -> tuple[str, ...]:
    """The platforms, of those the target's platform names, where its key works.

    Each is asked with the read-only alerts probe, at the base URL the deployment
    gives it (only an allowed one gets the key), in a pacing of its own for this
    account. Whatever is not a genuine `valid` counts as "not there": a lookup
    never fails a check.
    """
    found = await asyncio.gather(
        *(
            _works_on(target, client, gate, get_platform(name), options, max_wait)
            for name in target.platform.locate_on
        )
    )
    return tuple(
        name for name, works in zip(target.platform.locate_on, found, strict=True) if works
    )


async def _works_on(
    target: Target,
    client: OpsgenieClient,
    gate: AccountGate,
    platform: Platform,
    options: CheckOptions,
    max_wait: float,
) -> bool:
    verdict = await _verdict_on(target, client, gate, platform, options, max_wait)
    return verdict is not None and verdict.outcome is Outcome.VALID


async def jsm_readiness(
    target: Target,
    client: OpsgenieClient,
    gate: AccountGate,
    options: CheckOptions,
    max_wait: float = 5.0,
    *,
    turn: float | None = None,
) -> str:
    """Whether the target's key works on JSM Operations: `works`, `fails` or `unknown`.

    The read-only alerts probe at the deployment's JSM Ops base URL, in the
    account's JSM pacing (the same as `locate`'s). Only a genuine answer is a
    verdict (SPEC §6): `works` for valid, `fails` for any other; anything else
    (a transient failure, an unrecognised answer, a paused account, a base URL
    off the allowlist) is `unknown`. Never raises for Opsgenie, the allowlist or
    the pacing store: asking never fails a check.
    """
    verdict = await _verdict_on(target, client, gate, JSM_OPS, options, max_wait, turn)
    if verdict is None:
        return JSM_UNKNOWN
    return JSM_WORKS if verdict.outcome is Outcome.VALID else JSM_FAILS


async def _verdict_on(
    target: Target,
    client: OpsgenieClient,
    gate: AccountGate,
    platform: Platform,
    options: CheckOptions,
    max_wait: float,
    turn: float | None = None,
) -> Verdict | None:
    """`platform`'s verdict on the target's key (alerts probe), or None without one."""
    gate_key = target.gate_key_on(platform.name)
    try:
        await wait_for_turn(gate_key, gate, turn, max_wait)
        return await client.check_key(
            options.base_urls[platform.name], target.key, platform=platform, probe="alerts"
        )
    except Throttled as exc:
        if exc.problem is not None:
            metrics.throttle_fallback(exc.problem)
        if not isinstance(exc, AccountPaused):  # a pause is not renewed by waiting it out
            await _pause_quietly(gate, gate_key, exc.retry_after or 1.0)
        return None
    except (OpsgenieError, BaseUrlError, RedisError):
        return None


async def _pause_quietly(gate: AccountGate, gate_key: str, seconds: float) -> None:
    # Without the pause the next call meets the 429 again; a lookup must not fail a check.
    with contextlib.suppress(RedisError):
        await gate.pause(gate_key, seconds)


def _where(works_on: Sequence[str]) -> str:
    """The sentence that tells a user where their key works instead."""
    if "opsgenie-eu" in works_on:
        return "The key works on Opsgenie's EU region: this key belongs to the EU region."
    if "opsgenie" in works_on:
        return "The key works on Opsgenie's US region: this key belongs to the US region."
    return "The key works on JSM Operations: this account has moved there."


async def wait_for_turn(
    gate_key: str, gate: AccountGate, turn: float | None, max_wait: float
) -> None:
    """Sleep until the call's turn; book a new turn when it was missed or there is none."""
    loop = asyncio.get_running_loop()
    for _ in range(MAX_REBOOKINGS):
        if turn is None:
            # A turn booked just now is never missed: if it passed while the answer
            # was on its way (a negative delay), the call leaves at once.
            [delay] = (await gate.reserve({gate_key: 1}))[gate_key]
            turn = loop.time() + max(delay, 0.0)
        if turn - loop.time() > max_wait:
            raise AccountPaused("the account is paused or its pacing is full", turn - loop.time())
        if loop.time() < turn:
            await asyncio.sleep(turn - loop.time())
        if loop.time() - turn <= gate.late_tolerance:
            return
        # Woke too late (a busy event loop): sent on its old turn, the call would bunch
        # with the account's on-time calls and push a second past the rate. Book another.
        turn = None
    raise AccountPaused("the worker is too busy to keep the account's pacing", 1.0)


def judge(target: Target, verdict: Verdict, today: date | None = None) -> Result:
    """A Result for the platform's final answer about the target's key.

    On or after an Opsgenie account's deadline (`today`, default the UTC day), a
    failing answer is said to be about the platform, never about the key; the
    outcome stays what the platform answered, so confirmation and the guard apply.
    """
    title = target.platform.title
    who = f"team {target.label!r} of {title} account {target.account!r}"
    code = verdict.reason or (
        f"opsgenie_{verdict.opsgenie_code}" if verdict.opsgenie_code else None
    )
    retired = target.deadline is not None and target.deadline.passed(today)
    match verdict.outcome:
        case Outcome.INVALID_KEY | Outcome.KEY_LACKS_ACCESS | Outcome.REJECTED if retired:
            assert target.deadline is not None
            text = (
                f"{title} answered HTTP {verdict.http_status} for {who}, whose Opsgenie "
                f"stopped on {target.deadline.on.isoformat()}: the answer is about the "
                "platform, not the key. Move the integration to JSM Operations."
            )
        case Outcome.VALID:
            text = f"The integration key of {who} works."
        case Outcome.INVALID_KEY if verdict.reason == "malformed_key":
            text = (
                f"The integration key of {who} is not in a valid format: {title} refuses it "
                "as malformed, and it cannot work anywhere. Copy the key again."
            )
        case Outcome.INVALID_KEY:
            text = (
                f"{title} does not accept the integration key of {who}: it is mistyped, "
                "revoked, or its integration is disabled."
            )
        case Outcome.KEY_LACKS_ACCESS:
            text = (
                f"{title} knows the integration key of {who} but does not allow this check "
                "(for the authenticate probe, the integration needs configuration access)."
            )
        case _:
            detail = _redact(verdict.message or "no reason given", target.key)
            text = f"{title} rejected the check of {who} (HTTP {verdict.http_status}): {detail}"
    return Result(verdict.outcome, text, verdict.http_status, code)


def give_up(target: Target | None, error: OpsgenieError, attempts: int) -> Result:
    """The `error` outcome once retries are exhausted: the team's status is kept."""
    who = (
        f"team {target.label!r} of {target.platform.title} account {target.account!r}"
        if target
        else "team"
    )
    state, reason = rate_limit_of(error)
    return Result(
        Outcome.ERROR,
        f"No answer about {who} after {attempts} attempts; last error: {error}. "
        "The team's status is unchanged.",
        error.http_status,
        error.code,
        rate_limit_state=state,
        rate_limit_reason=reason,
    )


def rate_limit_of(error: OpsgenieError) -> tuple[str | None, str | None]:
    """`X-RateLimit-State` and `X-RateLimit-Reason` of a 429 (None for other errors)."""
    if isinstance(error, Throttled) and not isinstance(error, AccountPaused):
        return error.state, error.reason
    return None, None


def _redact(text: str, key: str) -> str:
    # Opsgenie has no reason to echo a key, but a message we store must not carry one.
    return text.replace(key, "[redacted]") if key else text
