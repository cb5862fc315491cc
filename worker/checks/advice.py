"""The hint of a stored request or team: the facts `worker.platforms.hints` reads.

Nothing here is stored: a hint is derived on read from the outcome (or the team's
status), the error code, `works_on`, `jsm_ops` and the account's deadline, so the
same row reads the same way in the API, the CLI and the status webhook.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Integration, Outcome, Team, TeamStatus, ValidationRequest
from worker.platforms import PLATFORMS
from worker.platforms.hints import Facts, Hint, hint_for
from worker.platforms.sunset import Deadline, account_deadline
from worker.platforms.sunset import today as utc_today

VERDICT_CODES = ("malformed_key",)
"""Error codes a verdict carries (besides Opsgenie's own, `opsgenie_<code>`)."""


def deadline_of(integration: Integration | None) -> Deadline | None:
    """The account's deadline when it is on an Opsgenie platform, else None."""
    platform = PLATFORMS.get(integration.platform) if integration is not None else None
    if integration is None or platform is None:
        return None
    return account_deadline(platform, integration.migrated_on, integration.switched_off_on)


def request_hint(
    session: Session, row: ValidationRequest, today: date | None = None
) -> Hint | None:
    """The hint of a finished request (None while it runs, or with nothing to do)."""
    if row.outcome is None:
        return None
    integration = session.get(Integration, row.integration_id)
    found = deadline_of(integration)
    jsm_ops = None
    if row.outcome is Outcome.VALID and found is not None:
        jsm_ops = session.scalar(select(Team.jsm_ops).where(Team.id == row.team_id))
    return hint_for(
        Facts(
            outcome=row.outcome.value,
            error_code=row.error_code,
            works_on=row.works_on.split(",") if row.works_on else (),
            platform=integration.platform if integration else None,
            base_url=integration.base_url if integration else None,
            organization_id=row.organization_id,
            integration_id=row.integration_id,
            deadline=found,
            judged_on=row.finished_at.date() if row.finished_at else None,
            today=today,
            jsm_ops=jsm_ops,
        )
    )


def team_hint(
    team: Team, organization_id: int, integration: Integration, today: date | None = None
) -> Hint | None:
    """The hint of a team as last checked: its failing status, else its last check's error,
    else what its account's deadline asks of a valid key."""
    code = team.last_error_code
    transient = code is not None and not _verdict_code(code)
    judged_on: date | None
    if team.status in (TeamStatus.UNKNOWN, TeamStatus.VALID) and transient:
        outcome, judged_on = Outcome.ERROR.value, today or utc_today()
    else:
        outcome = team.status.value
        judged_on = team.status_changed_at.date() if team.status_changed_at else None
    return hint_for(
        Facts(
            outcome=outcome,
            error_code=code,
            works_on=team.works_on.split(",") if team.works_on else (),
            platform=integration.platform,
            base_url=integration.base_url,
            organization_id=organization_id,
            integration_id=integration.id,
            deadline=deadline_of(integration),
            judged_on=judged_on,
            today=today,
            jsm_ops=team.jsm_ops,
        )
    )


def _verdict_code(code: str) -> bool:
    return code in VERDICT_CODES or code.startswith("opsgenie_")


__all__ = ["deadline_of", "request_hint", "team_hint"]
