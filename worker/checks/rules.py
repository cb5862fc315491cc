"""The validation rules of SPEC §3: which records a check needs, and what answers mean.

Plain functions over a session and a client, testable without Celery:
`resolve()` decides `invalid_integration` and `invalid_team` from the database
alone, `probe()` asks Opsgenie and turns its verdict into a `Result`.
Messages name the account and the team label, never the key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import (
    Integration,
    IntegrationStatus,
    OrganizationIntegration,
    Outcome,
    Team,
)
from models.crypto import KeyVault, UndecryptableKey
from models.db import one_of
from worker.checks.baseurl import BaseUrlError
from worker.checks.opsgenie import AccountPaused, OpsgenieClient, OpsgenieError, Throttled, Verdict
from worker.checks.ratelimit import AccountGate

OPSGENIE_PROVIDER = "opsgenie"


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

    @property
    def gate_key(self) -> str:
        """Opsgenie's rate-limit bucket is per account: one Integration row."""
        return f"integration:{self.integration_id}"

    def __repr__(self) -> str:  # the key must not reach a log through a repr
        return f"Target(team_id={self.team_id!r}, account={self.account!r})"


@dataclass(frozen=True)
class Result:
    """One attempt's conclusion: an outcome and a message fit for a person."""

    outcome: Outcome
    message: str
    http_status: int | None = None
    error_code: str | None = None


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
    session: Session, requests: Sequence[Asked], vault: KeyVault
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
                )
                .join(
                    OrganizationIntegration,
                    OrganizationIntegration.integration_id == Integration.id,
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
                ).where(one_of(session, Team.id, wanted))
            )
        }
        if wanted
        else {}
    )
    return {r.id: _resolve_one(r, links, teams, vault) for r in requests}


def resolve(session: Session, request: Asked, vault: KeyVault) -> Target | Result:
    """`resolve_many` for one request."""
    return resolve_many(session, [request], vault)[request.id]


def _resolve_one(
    request: Asked,
    links: Mapping[tuple[int, int], Any],  # rows of the link query
    teams: Mapping[str, Any],  # rows of the team query
    vault: KeyVault,
) -> Target | Result:
    link = links.get((request.organization_id, request.integration_id))
    if link is None or link.status != IntegrationStatus.ACTIVE:
        return Result(
            Outcome.INVALID_INTEGRATION,
            f"The Opsgenie integration {request.integration_id} does not exist "
            f"for organization {request.organization_id}.",
        )
    team = teams.get(request.team_id) if request.team_id else None
    if team is None or team.organization_integration_id != link.link_id:
        return Result(
            Outcome.INVALID_TEAM,
            f"Team {request.team_id!r} does not belong to the Opsgenie account "
            f"{link.account_name!r}.",
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
    return Target(
        team_id=team.id,
        label=team.label,
        account=link.account_name,
        integration_id=link.integration_id,
        base_url=link.base_url,
        key=key,
        key_version=team.key_version,
    )


MAX_REBOOKINGS = 10


async def probe(
    target: Target,
    client: OpsgenieClient,
    gate: AccountGate,
    *,
    turn: float | None = None,
    max_wait: float = 5.0,
) -> Result:
    """Ask Opsgenie about the target's key; raise TransientError to be retried.

    The call waits its turn in the account's pacing: `turn` (event-loop time)
    when the caller booked it already (a batch books all its calls at once), else
    one call is booked here. A turn further off than `max_wait` (a paused account)
    is not waited for in place: AccountPaused sends the check back to the queue.
    A 429 pauses the account for every worker before the error goes up.
    """
    await wait_for_turn(target, gate, turn, max_wait)
    try:
        verdict = await client.check_key(target.base_url, target.key)
    except Throttled as exc:
        await gate.pause(target.gate_key, exc.retry_after or 1.0)
        raise
    except BaseUrlError:
        # The allowlist changed since the account was added: never send the key.
        return Result(
            Outcome.ERROR,
            f"The base URL of Opsgenie account {target.account!r} is no longer allowed; "
            "the key was not sent.",
            error_code="base_url_not_allowed",
        )
    return judge(target, verdict)


async def wait_for_turn(
    target: Target, gate: AccountGate, turn: float | None, max_wait: float
) -> None:
    """Sleep until the call's turn; book a new turn when it was missed or there is none."""
    loop = asyncio.get_running_loop()
    for _ in range(MAX_REBOOKINGS):
        if turn is None:
            # A turn booked just now is never missed: if it passed while the answer
            # was on its way (a negative delay), the call leaves at once.
            [delay] = (await gate.reserve({target.gate_key: 1}))[target.gate_key]
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


def judge(target: Target, verdict: Verdict) -> Result:
    """A Result for Opsgenie's final answer about the target's key."""
    who = f"team {target.label!r} of Opsgenie account {target.account!r}"
    code = f"opsgenie_{verdict.opsgenie_code}" if verdict.opsgenie_code else None
    match verdict.outcome:
        case Outcome.VALID:
            text = f"The integration key of {who} works."
        case Outcome.INVALID_KEY:
            text = (
                f"Opsgenie does not accept the integration key of {who}: it is mistyped, "
                "revoked, or its integration is disabled."
            )
        case Outcome.KEY_LACKS_ACCESS:
            text = (
                f"Opsgenie knows the integration key of {who} but does not allow this check "
                "(for the authenticate probe, the integration needs configuration access)."
            )
        case _:
            detail = _redact(verdict.message or "no reason given", target.key)
            text = f"Opsgenie rejected the check of {who} (HTTP {verdict.http_status}): {detail}"
    return Result(verdict.outcome, text, verdict.http_status, code)


def give_up(target: Target | None, error: OpsgenieError, attempts: int) -> Result:
    """The `error` outcome once retries are exhausted: the team's status is kept."""
    who = f"team {target.label!r} of Opsgenie account {target.account!r}" if target else "team"
    return Result(
        Outcome.ERROR,
        f"No answer about {who} after {attempts} attempts; last error: {error}. "
        "The team's status is unchanged.",
        error.http_status,
        error.code,
    )


def _redact(text: str, key: str) -> str:
    # Opsgenie has no reason to echo a key, but a message we store must not carry one.
    return text.replace(key, "[redacted]") if key else text
