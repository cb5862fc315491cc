"""The audit log: who did what, to which organization and target, and when (SPEC §8).

    integration.add      integration.migrate  integration.disable  integration.enable
    integration.remove   team.add             team.import          team.replace_key
    team.remove          keys.rotate          changes.release      changes.discard
    token.create         token.revoke

`record` adds one event to the caller's transaction, so an action and its record
commit, or roll back, together. The actor is `cli:<os user>` on the command line
(`cli_actor`) and `token:<name>` for an API caller (`worker.access.Caller.actor`);
a web app's `ValidationClient` writes as the `actor` it was given (`client` unless
it names itself).
`details` says what else the action took or did (counts, flags), never a key or a
token. Events are read newest first, a page at a time (`page`), and beat deletes
those older than OGV_AUDIT_RETENTION_DAYS (worker/periodic/retention.py).
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEvent
from models.access import ACTOR_MAX, TARGET_MAX

ACTIONS = (
    "integration.add",
    "integration.migrate",
    "integration.update",
    "integration.disable",
    "integration.enable",
    "integration.remove",
    "team.add",
    "team.import",
    "team.replace_key",
    "team.remove",
    "keys.rotate",
    "changes.release",
    "changes.discard",
    "token.create",
    "token.revoke",
)
"""Every action recorded; `ogv audit list --action` and `GET /v1/audit?action=` take one."""
DEFAULT_PAGE = 50
MAX_PAGE = 500


def cli_actor() -> str:
    """The command line's actor: `cli:` and the operating-system user running it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"


def record(
    session: Session,
    actor: str,
    action: str,
    *,
    organization_id: int | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one event to `session`'s transaction (it is written when that commits)."""
    if action not in ACTIONS:
        raise ValueError(f"{action} is not an audited action")
    session.add(
        AuditEvent(
            actor=actor[:ACTOR_MAX],
            action=action,
            organization_id=organization_id,
            target=target[:TARGET_MAX] if target is not None else None,
            details=json.dumps(details or {}, sort_keys=True, default=str),
        )
    )


@dataclass(frozen=True)
class Entry:
    """One event as `ogv audit list` and `GET /v1/audit` show it."""

    id: int
    at: datetime
    actor: str
    action: str
    organization_id: int | None
    target: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class Query:
    """Which events to read: filters, the caller's organizations, and the page."""

    organization_id: int | None = None
    action: str | None = None
    since: datetime | None = None
    organizations: frozenset[int] | None = None
    """The caller's organizations (None: every one); events of no organization are then
    hidden too."""
    limit: int = DEFAULT_PAGE
    before: int | None = None
    """The page starts below this event id (`Page.next_cursor`)."""


@dataclass(frozen=True)
class Page:
    """Up to `limit` events, newest first, and the cursor of the next page (or None)."""

    events: list[Entry]
    next_cursor: str | None
    """The id to pass as `before` (a cursor) for the next page; None on the last one."""


def page(session: Session, query: Query) -> Page:
    """One page of events, newest first."""
    statement = select(AuditEvent)
    if query.organization_id is not None:
        statement = statement.where(AuditEvent.organization_id == query.organization_id)
    if query.organizations is not None:
        statement = statement.where(AuditEvent.organization_id.in_(query.organizations))
    if query.action is not None:
        statement = statement.where(AuditEvent.action == query.action)
    if query.since is not None:
        statement = statement.where(AuditEvent.at >= query.since)
    if query.before is not None:
        statement = statement.where(AuditEvent.id < query.before)
    rows = list(session.scalars(statement.order_by(AuditEvent.id.desc()).limit(query.limit + 1)))
    events = [_entry(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return Page(events, str(events[-1].id) if more else None)


def _entry(row: AuditEvent) -> Entry:
    return Entry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        organization_id=row.organization_id,
        target=row.target,
        details=json.loads(row.details),
    )
