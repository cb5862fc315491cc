"""`ogv audit`: who did what, to which organization and target, and when
(worker/audit.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.operations.cli.output import JsonOption, console, emit, fail

app = typer.Typer(no_args_is_help=True, help="The audit log of operators' and callers' actions.")

_AGO = re.compile(r"^([0-9]{1,6})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> datetime | None:
    """`--since`: an ISO 8601 date or time (UTC unless it says), or an age such as 30m,
    12h or 7d; None when it is neither."""
    if found := _AGO.fullmatch(text):
        return datetime.now(UTC) - timedelta(**{_UNITS[found[2]]: int(found[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@app.command("list")
def audit_list(
    org: Annotated[int | None, typer.Option(help="Only this organization's events.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. changes.release.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events since: 2027-01-31, 2027-01-31T12:00, 7d, 12h.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Events per page (at most 500).")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="The next_cursor of the page before (--json).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log, newest first, a page at a time."""
    from models.db import session_factory
    from worker import audit

    if action is not None and action not in audit.ACTIONS:
        fail("invalid", f"--action is one of {', '.join(audit.ACTIONS)}", as_json)
    when = parse_since(since) if since is not None else None
    if since is not None and when is None:
        fail("invalid", "--since takes a date or time (2027-01-31T12:00) or an age (7d)", as_json)
    if not 1 <= limit <= audit.MAX_PAGE:
        fail("invalid", f"--limit runs from 1 to {audit.MAX_PAGE}", as_json)
    if cursor is not None and not cursor.isdigit():
        fail("invalid", "--cursor takes the next_cursor of the page before", as_json)
    query = audit.Query(
        organization_id=org,
        action=action,
        since=when,
        limit=limit,
        before=int(cursor) if cursor else None,
    )
    with session_factory()() as session:
        page = audit.page(session, query)
    emit(page, as_json, lambda: _print(page.events, page.next_cursor))


def _print(events: Sequence[Any], next_cursor: str | None) -> None:
    if not events:
        console.print("no audit events")
        return
    table = Table("at", "actor", "action", "org", "target", "details")
    for column in table.columns:
        column.overflow = "fold"
    for event in events:
        table.add_row(
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            event.actor,
            event.action,
            str(event.organization_id) if event.organization_id is not None else "-",
            event.target or "-",
            json.dumps(event.details, separators=(",", ":")),
        )
    console.print(table)
    if next_cursor is not None:
        console.print(f"more: --cursor {next_cursor}", highlight=False)
