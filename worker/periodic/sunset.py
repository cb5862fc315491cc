"""The sunset's notices: a webhook document once at 30, 7 and 1 days to an account's deadline.

Beat runs `announce` every `OGV_SUNSET_INTERVAL` seconds. For every integration at
risk (`worker.readiness.at_risk`: still on Opsgenie, with teams whose keys do not
work on JSM Operations), the tightest threshold of `NOTICE_DAYS` its days left
have reached is recorded as a `SunsetNotice` row, unless one is recorded already
for that integration, deadline and threshold: the unique constraint makes it once,
however many beats run or restart. A run that finds an account at 5 days announces
7 alone; 30 is never sent late. A deadline that moves (a switch-off recorded later)
gets notices of its own.

Each new notice is logged (`sunset.approaching`) and, with `OGV_STATUS_WEBHOOK_URL`,
its id is published to `ogv.notify_sunset`, which POSTs `document` and marks it
delivered; the outbox sweeper publishes again a notice whose message was lost (for
`RESEND_FOR` after it was recorded). No key is in it: ids, dates and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models import SunsetNotice, utcnow
from worker import readiness
from worker.platforms.hints import Facts, hint_for
from worker.platforms.sunset import NOTICE_DAYS, deadline

log = logging.getLogger("ogv.sunset")

RESEND_FOR = timedelta(days=1)
"""How long after a notice is recorded the sweeper still publishes it when undelivered."""


def announce(
    sessions: sessionmaker[Session],
    publish: Callable[[int], None],
    today: date | None = None,
) -> list[int]:
    """Record and publish every notice due `today` (default: today, UTC); their ids."""
    with sessions.begin() as session:
        risks = readiness.at_risk(session, today, within=max(NOTICE_DAYS))
        # Organizations linked to one integration share its deadline: one notice for all.
        accounts = {risk.integration_id: risk for risk in risks}
        recorded = (_record(session, risk) for risk in accounts.values())
        notices: list[dict[str, Any]] = [
            {
                "notice_id": n.id,
                "integration_id": n.integration_id,
                "deadline": n.deadline.isoformat(),
                "days_left": n.days_left,
                "threshold": n.threshold,
            }
            for n in recorded
            if n is not None
        ]
    for notice in notices:  # once committed: a notice published is one on record
        log.warning("sunset.approaching", extra=notice)
        publish(notice["notice_id"])
    return [notice["notice_id"] for notice in notices]


def _record(session: Session, risk: readiness.AtRisk) -> SunsetNotice | None:
    threshold = min(t for t in NOTICE_DAYS if risk.days_left <= t)
    known = session.scalar(
        select(SunsetNotice).where(
            SunsetNotice.integration_id == risk.integration_id,
            SunsetNotice.deadline == risk.deadline,
            SunsetNotice.threshold == threshold,
        )
    )
    if known is not None:
        return None
    notice = SunsetNotice(
        integration_id=risk.integration_id,
        deadline=risk.deadline,
        threshold=threshold,
        days_left=risk.days_left,
    )
    try:
        with session.begin_nested():  # another beat recorded it meanwhile: it announces
            session.add(notice)
            session.flush()
    except IntegrityError:
        return None
    return notice


def document(session: Session, notice_id: int, today: date | None = None) -> dict[str, Any] | None:
    """The webhook's JSON for one notice, or None once delivered (or gone with its
    integration)."""
    notice = session.get(SunsetNotice, notice_id)
    if notice is None or notice.notified_at is not None:
        return None
    risks = [
        r
        for r in readiness.at_risk(session, today)
        if r.integration_id == notice.integration_id and r.deadline == notice.deadline
    ]
    found = deadline(None, None, notice.deadline)
    hint = hint_for(
        Facts(
            "valid",
            platform=risks[0].platform if risks else None,
            integration_id=notice.integration_id,
            deadline=found,
            today=today,
        )
    )
    return {
        "event": "sunset.approaching",
        "notice_id": notice.id,
        "integration_id": notice.integration_id,
        "organization_ids": sorted({r.organization_id for r in risks}),
        "deadline": notice.deadline.isoformat(),
        "deadline_reason": risks[0].deadline_reason if risks else None,
        "threshold": notice.threshold,
        "days_left": notice.days_left,
        "teams_not_ready": sum(r.teams for r in risks),
        "hint": hint.as_dict() if hint else None,
    }


def idempotency_key(notice_id: int) -> str:
    return f"ogv-sunset-{notice_id}"


def mark_delivered(session: Session, notice_id: int) -> None:
    session.execute(
        update(SunsetNotice)
        .where(SunsetNotice.id == notice_id)
        .values(notified_at=utcnow(), notify_attempts=SunsetNotice.notify_attempts + 1)
    )


def count_attempt(session: Session, notice_id: int) -> int:
    session.execute(
        update(SunsetNotice)
        .where(SunsetNotice.id == notice_id)
        .values(notify_attempts=SunsetNotice.notify_attempts + 1)
    )
    return (
        session.scalar(select(SunsetNotice.notify_attempts).where(SunsetNotice.id == notice_id))
        or 0
    )


def undelivered(session: Session, older_than: timedelta, max_attempts: int) -> list[int]:
    """Notices whose delivery is overdue (their message was lost), recorded within
    `RESEND_FOR`: to publish again."""
    now = utcnow()
    return list(
        session.scalars(
            select(SunsetNotice.id)
            .where(
                SunsetNotice.notified_at.is_(None),
                SunsetNotice.notify_attempts < max_attempts,
                SunsetNotice.created_at < now - older_than,
                SunsetNotice.created_at > now - RESEND_FOR,
            )
            .order_by(SunsetNotice.id)
        )
    )


__all__ = [
    "announce",
    "count_attempt",
    "document",
    "idempotency_key",
    "mark_delivered",
    "undelivered",
]
