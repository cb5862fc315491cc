"""Status-change events: someone learns a key died before the alert that needed it.

Each change of a team's status is a row in `team_status_changes`, written in the
same transaction as the status itself, and logged as `team.status_changed`. When
`OGV_STATUS_WEBHOOK_URL` is set, a task POSTs a small JSON document about it
(never the key), retried with backoff; `notified_at` marks it delivered, and the
outbox sweeper re-publishes changes whose notification was lost.

`post` also delivers the documents of a base URL turning unavailable or
recovering (worker/checks/platform_health.py), or whose guard tripped, under their
own idempotency key. With OGV_WEBHOOK_SECRET each delivery is signed as Standard
Webhooks says (worker/webhooks.py); its `webhook-id` is that idempotency key, so
a redelivery keeps it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Integration, OrganizationIntegration, Team, TeamStatusChange, utcnow
from worker import webhooks
from worker.checks.advice import team_hint

if TYPE_CHECKING:
    from worker.checks.records import StatusChange

log = logging.getLogger("ogv.pipeline")


def log_change(change: StatusChange, *, released: bool = False) -> None:
    """A change's `team.status_changed` line: written by a check, or `released` by an
    operator from the mass-change guard's hold."""
    extra: dict[str, Any] = {
        "team_id": change.team_id,
        "request_id": str(change.request_id),
        "old_status": change.old_status.value,
        "new_status": change.new_status.value,
    }
    if released:
        extra["released"] = True
    log.info("team.status_changed", extra=extra)


class WebhookFailed(Exception):
    """Raised when the webhook did not answer 2xx; the delivery is retried."""


def document(session: Session, change_id: int) -> dict[str, Any] | None:
    """The webhook's JSON for one status change, or None if it was already delivered."""
    row = session.execute(
        select(TeamStatusChange, Team, OrganizationIntegration, Integration)
        .join(Team, Team.id == TeamStatusChange.team_id)
        .join(
            OrganizationIntegration, Team.organization_integration_id == OrganizationIntegration.id
        )
        .join(Integration, OrganizationIntegration.integration_id == Integration.id)
        .where(TeamStatusChange.id == change_id, TeamStatusChange.notified_at.is_(None))
    ).first()
    if row is None:
        return None
    change, team, link, integration = row
    hint = team_hint(team, link.organization_id, integration)
    return {
        "event": "team.status_changed",
        "change_id": change.id,
        "request_id": str(change.request_id),
        "team_id": team.id,
        "team_label": team.label,
        "organization_id": link.organization_id,
        "integration_id": integration.id,
        "account": integration.account_name,
        "old_status": change.old_status.value,
        "new_status": change.new_status.value,
        "changed_at": change.changed_at.isoformat(),
        "hint": hint.as_dict()
        if (hint := team_hint(team, link.organization_id, integration))
        else None,
    }


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    seconds: float,
    idempotency_key: str | None = None,
    keys: Sequence[bytes] = (),
) -> None:
    """POST the document; raise WebhookFailed unless the receiver answers 2xx.

    `idempotency_key` is the same for every delivery of one event (default: the
    status change's); the receiver de-duplicates on it. With `keys` (OGV_WEBHOOK_SECRET)
    the delivery is signed, the key being its `webhook-id`.
    """
    event_id = idempotency_key or f"ogv-change-{body['change_id']}"
    # The bytes signed are the bytes sent.
    payload = json.dumps(body).encode()
    try:
        async with session.post(
            url,
            data=payload,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": event_id,
                **webhooks.headers(keys, event_id, payload),
            },
            timeout=aiohttp.ClientTimeout(total=seconds),
            allow_redirects=False,
        ) as response:
            if not 200 <= response.status < 300:
                raise WebhookFailed(f"the webhook answered HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise WebhookFailed(f"the webhook could not be reached ({type(exc).__name__})") from exc


def mark_delivered(session: Session, change_id: int) -> None:
    session.execute(
        update(TeamStatusChange)
        .where(TeamStatusChange.id == change_id)
        .values(notified_at=utcnow(), notify_attempts=TeamStatusChange.notify_attempts + 1)
    )


def count_attempt(session: Session, change_id: int) -> int:
    session.execute(
        update(TeamStatusChange)
        .where(TeamStatusChange.id == change_id)
        .values(notify_attempts=TeamStatusChange.notify_attempts + 1)
    )
    return (
        session.scalar(
            select(TeamStatusChange.notify_attempts).where(TeamStatusChange.id == change_id)
        )
        or 0
    )


def undelivered(
    session: Session, older_than: timedelta, max_attempts: int, limit: int
) -> list[int]:
    """Changes whose notification is overdue (its message was lost): to publish again."""
    return list(
        session.scalars(
            select(TeamStatusChange.id)
            .where(
                TeamStatusChange.notified_at.is_(None),
                TeamStatusChange.notify_attempts < max_attempts,
                TeamStatusChange.changed_at < utcnow() - older_than,
            )
            .order_by(TeamStatusChange.id)
            .limit(limit)
        )
    )
