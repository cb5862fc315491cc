"""The validation rules of SPEC §3: which records a check needs, and what answers mean.

Plain functions over a session and a client, testable without Celery:
`resolve()` decides `invalid_integration` and `invalid_team` from the database
alone, `probe()` asks Opsgenie and turns its verdict into a `Result`.
Messages name the account and the team label, never the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import (
    Integration,
    IntegrationStatus,
    OrganizationIntegration,
    Outcome,
    Team,
    ValidationRequest,
)
from models.crypto import KeyVault
from worker.baseurl import BaseUrlError
from worker.opsgenie import AccountPaused, OpsgenieClient, OpsgenieError, Throttled, Verdict
from worker.ratelimit import AccountGate

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


def resolve(session: Session, request: ValidationRequest, vault: KeyVault) -> Target | Result:
    """Load what the check needs, or conclude without calling Opsgenie (SPEC §3, 1-2)."""
    row = session.execute(
        select(Integration, OrganizationIntegration)
        .join(OrganizationIntegration, OrganizationIntegration.integration_id == Integration.id)
        .where(
            Integration.id == request.integration_id,
            Integration.provider == OPSGENIE_PROVIDER,
            OrganizationIntegration.organization_id == request.organization_id,
        )
    ).first()
    if row is None or row.OrganizationIntegration.status != IntegrationStatus.ACTIVE:
        return Result(
            Outcome.INVALID_INTEGRATION,
            f"The Opsgenie integration {request.integration_id} does not exist "
            f"for organization {request.organization_id}.",
        )
    integration, org_integration = row.Integration, row.OrganizationIntegration
    team = None
    if request.team_id:
        team = session.scalars(
            select(Team).where(
                Team.id == request.team_id,
                Team.organization_integration_id == org_integration.id,
            )
        ).first()
    if team is None:
        return Result(
            Outcome.INVALID_TEAM,
            f"Team {request.team_id!r} does not belong to the Opsgenie account "
            f"{integration.account_name!r}.",
        )
    return Target(
        team_id=team.id,
        label=team.label,
        account=integration.account_name,
        integration_id=integration.id,
        base_url=integration.base_url,
        key=vault.decrypt(team.encrypted_key),
        key_version=team.key_version,
    )


async def probe(target: Target, client: OpsgenieClient, gate: AccountGate) -> Result:
    """Ask Opsgenie about the target's key; raise TransientError to be retried.

    A paused account is not called at all: the pause is itself a throttle. A 429
    pauses the account for every worker before the error goes up.
    """
    remaining = await gate.paused_for(target.gate_key)
    if remaining > 0:
        raise AccountPaused("the account is paused after a throttled call", remaining)
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
