"""`ogv changes`: the status changes the mass-change guard holds back, to release
or discard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from worker.operations.cli.output import (
    NARROWING,
    JsonOption,
    console,
    emit,
    fail,
    is_team_id,
    log_events,
    one_line_rows,
)

app = typer.Typer(no_args_is_help=True, help="Status changes the mass-change guard holds back.")


BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help="Only the held changes of this base URL.")
]
TeamOption = Annotated[
    list[str] | None,
    typer.Option("--team", help="Only this team's held change (a team id; repeatable)."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every held change.")]


AUDITED_TEAMS = 100
"""Team ids an audit event of a release or discard names at most (it counts them all)."""


def _target(selection: Any) -> str:
    """What an operator named, for the audit log: a base URL, teams, or everything."""
    if selection.base_url is not None:
        return str(selection.base_url)
    return f"{len(selection.team_ids)} teams" if selection.team_ids else "all"


def _by_organization(asks: Sequence[Any]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for ask in asks:
        found.setdefault(ask.organization_id, []).append(ask.team_id)
    return found


def _held_selection(
    base_url: str | None,
    team_ids: Sequence[str] | None,
    everything: bool,
    as_json: bool,
    required: bool = True,
) -> Any:
    """The held changes an operator named, or a one-line refusal (never echoing input)."""
    from worker.checks.held import Selection
    from worker.platforms.baseurl import BaseUrlError, normalise_base_url

    team_ids = list(team_ids or [])
    if everything and (base_url is not None or team_ids):
        fail("invalid", "give --all alone, or --base-url and --team without it", as_json)
    if required and not (everything or base_url is not None or team_ids):
        fail(
            "invalid",
            "name the held changes: --base-url URL, --team ID (repeatable) or --all",
            as_json,
        )
    if base_url is not None:
        try:
            base_url = normalise_base_url(base_url)
        except BaseUrlError as exc:
            fail("invalid_base_url", f"--base-url: {exc}", as_json)
    if not all(is_team_id(t) for t in team_ids):
        fail(
            "invalid",
            "--team takes team ids, which look like 2-payments "
            "(<organization integration id>-<label>); `ogv changes list` lists the held ones",
            as_json,
        )
    return Selection(base_url, tuple(dict.fromkeys(team_ids)))


CHANGES_PAGE = 50
"""Held changes `ogv changes list` shows when not told `--limit` (`--json`: all)."""
CHANGES_MAX_PAGE = 10_000


@app.command("list")
def changes_list(
    base_url: BaseUrlOption = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help=f"Show at most this many held changes, by team id "
            f"(default {CHANGES_PAGE}; --json: all of them)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show each base URL's mass-change guard, the held changes per account, and the
    changes themselves, one line each."""
    from models.db import session_factory
    from worker.checks import guard, held
    from worker.settings import get_settings

    selection = _held_selection(base_url, None, False, as_json, required=False)
    if limit is not None and not 1 <= limit <= CHANGES_MAX_PAGE:
        fail("invalid", f"--limit takes 1 to {CHANGES_MAX_PAGE}", as_json)
    settings = get_settings()
    with session_factory()() as session:
        guards = held.guard_report(
            session, guard.windows_for(settings), guard.Thresholds.from_settings(settings)
        )
        accounts = held.held_by_account(session, selection)
        shown = limit if limit is not None or as_json else CHANGES_PAGE
        if shown is None:
            rows = held.list_held(session, selection)
        else:
            rows = held.held_page(session, selection.base_url, limit=shown).held
    if selection.base_url is not None:
        guards = [g for g in guards if g.base_url == selection.base_url]
    emit(
        {"guard": guards, "accounts": accounts, "held": rows},
        as_json,
        lambda: _print_held(guards, accounts, rows),
    )


def _print_held(guards: Sequence[Any], accounts: Sequence[Any], rows: Sequence[Any]) -> None:
    """The guard of each base URL, the held changes per account, then the changes, a
    line each at the terminal's width (80 columns when it is not a terminal)."""
    lines = [] if guards else ["guard: no base URL counted yet"]
    for g in guards:
        window = f"window: {g.changes} changes of {g.checks} checks, {g.accounts} accounts"
        if g.tripped:
            since = f" since {g.tripped_at:%Y-%m-%d %H:%M:%S} UTC" if g.tripped_at else ""
            state = f"tripped{since}"
        else:
            state = "ok"
        lines.append(f"guard {g.base_url}: {state}; {window}; {g.held} held")
    total = sum(a.held for a in accounts)
    if not total:
        lines.append("no changes are held")
    else:
        lines.append(f"{total} held, by account:")
        lines += [
            "  " + line
            for line in one_line_rows(
                ("account", "base URL", "held"),
                [(a.account, a.base_url, str(a.held)) for a in accounts],
                console.width - 2,
                ((1, 24), (0, 16), (1, 0), (0, 0)),
            )
        ]
        lines += one_line_rows(
            ("team", "change", "held at", "evidence"),
            [_held_cells(row) for row in rows],
            console.width,
            NARROWING,
        )
    if len(rows) < total:
        lines.append(f"{total - len(rows)} more held: raise --limit, or --json for all")
    console.print("\n".join(lines), markup=False, highlight=False, crop=False)


def _held_cells(row: Any) -> tuple[str, str, str, str]:
    evidence = ", ".join(
        part
        for part in (
            f"HTTP {row.http_status}" if row.http_status else "",
            row.error_code or "",
            row.message or "",
        )
        if part
    )
    return (
        row.team_id,
        f"{row.old_status} → {row.new_status}",
        f"{row.held_at:%Y-%m-%d %H:%M}",
        evidence,
    )


@app.command("release")
def changes_release(
    base_url: BaseUrlOption = None,
    team: TeamOption = None,
    all_held: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the held changes to their teams, with their history and webhooks.

    A change whose team has moved on since (a new key, another status) is dropped.
    """
    from models.db import session_factory
    from worker import audit
    from worker.checks import held
    from worker.settings import get_settings

    selection = _held_selection(base_url, team, all_held, as_json)
    settings = get_settings()
    log_events(settings)
    with session_factory().begin() as session:
        released = held.release(session, selection)
        audit.record(
            session,
            audit.cli_actor(),
            "changes.release",
            target=_target(selection),
            details={
                "released": len(released.changes),
                "dropped": released.dropped,
                "teams": [change.team_id for change in released.changes[:AUDITED_TEAMS]],
            },
        )
    held.log_released(released.changes)
    if settings.status_webhook_url and released.changes:
        from worker.celery import app as celery_app
        from worker.enqueue import NOTIFY_TASK

        # As the workers do; the outbox sweeper sends again what is lost on the way.
        for change in released.changes:
            celery_app.send_task(NOTIFY_TASK, args=[change.id])
    summary = {
        "released": len(released.changes),
        "dropped": released.dropped,
        "changes": released.changes,
    }
    emit(
        summary,
        as_json,
        lambda: console.print(
            f"released {summary['released']}, dropped {summary['dropped']} stale", highlight=False
        ),
    )


@app.command("discard")
def changes_discard(
    base_url: BaseUrlOption = None,
    team: TeamOption = None,
    all_held: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Drop the held changes, and check those teams again now."""
    selection = _held_selection(base_url, team, all_held, as_json)
    from models import Requester
    from models.db import session_factory
    from worker import audit
    from worker.celery import app as celery_app
    from worker.checks import held
    from worker.periodic import recheck
    from worker.settings import get_settings

    settings = get_settings()
    sessions = session_factory()
    with sessions.begin() as session:
        asks = held.discard(session, selection)
        for organization_id, teams in _by_organization(asks).items():
            audit.record(
                session,
                audit.cli_actor(),
                "changes.discard",
                organization_id=organization_id,
                target=_target(selection),
                details={"discarded": len(teams), "teams": teams[:AUDITED_TEAMS]},
            )
    rechecked = recheck.check_again(
        sessions, celery_app, asks, requested_by=Requester.CLI, batch_size=settings.batch_size
    )
    summary = {"discarded": len(asks), "rechecked": rechecked}
    emit(
        summary,
        as_json,
        lambda: console.print(
            f"discarded {len(asks)} held changes; checking {rechecked} teams again",
            highlight=False,
        ),
    )
