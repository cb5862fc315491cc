"""`ogv validate`, `revalidate`, `status` and `platforms`: ask for checks, follow
them, and show what they found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.operations.cli.output import (
    NARROWING,
    JsonOption,
    confirming,
    console,
    emit,
    emit_listing,
    fail,
    is_team_id,
    one_line_rows,
)

if TYPE_CHECKING:
    from worker.web import teams

app = typer.Typer()
"""Top-level commands: `ogv` adds them without a group of their own."""


@app.command()
def revalidate(
    all_teams: Annotated[bool, typer.Option("--all", help="Every stored team.")] = False,
    org: Annotated[int | None, typer.Option(help="Only this organization's teams.")] = None,
    window: Annotated[float, typer.Option(help="Spread the run over this many seconds.")] = 0.0,
    timeout: Annotated[float, typer.Option(help="Stop waiting after this many seconds.")] = 3600,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Only enqueue the run.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-check every team (or one organization's) and follow the run to the end."""
    from models import Requester
    from worker.celery import app as celery_app
    from worker.checks import held
    from worker.database import session_factory
    from worker.enqueue import publish_batch
    from worker.periodic import dispatch
    from worker.settings import get_settings

    if all_teams == (org is not None):
        fail("invalid", "give exactly one of --all or --org", as_json)
    settings = get_settings()
    sessions = session_factory()
    run_id = dispatch.start_run(sessions, Requester.CLI, org)
    plan = dispatch.Plan.from_settings(settings, window)
    sent = dispatch.dispatch(
        sessions, lambda batch, countdown: publish_batch(celery_app, batch, countdown), run_id, plan
    )
    counts = {} if no_wait else _follow(sessions, run_id, sent.requests, timeout, as_json)
    done = sum(v for k, v in counts.items() if k not in OPEN_STATES)
    with sessions() as session:
        held_now = held.held_of_run(session, run_id)
        tripped = _tripped_guards(session)
    summary = {
        "run_id": run_id,
        "requests": sent.requests,
        "batches": sent.batches,
        "finished": done,
        "outcomes": counts,
        "held": held_now,
        "tripped_guards": tripped,
    }
    emit(summary, as_json, lambda: _print_run(summary))
    if not no_wait and done < sent.requests:
        fail("timeout", f"run {run_id} is not finished after {timeout}s", as_json, 2)


OPEN_STATES = ("pending", "running", "confirming")
"""Request states (as `progress` counts them) that are not finished yet."""

FOLLOW_INTERVAL = 0.5
"""Seconds between two looks at a run's progress, when counting it is quick."""


def _follow(
    sessions: Any, run_id: uuid.UUID, total: int, timeout: float, quiet: bool
) -> dict[str, int]:
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from worker.periodic.dispatch import progress

    deadline = time.monotonic() + timeout
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task("validating", total=total)
        while True:
            asked = time.monotonic()
            with sessions() as session:
                counts = progress(session, run_id)
            took = time.monotonic() - asked
            done = sum(v for k, v in counts.items() if k not in OPEN_STATES)
            bar.update(task, completed=done, description=_describe_progress(counts))
            if done >= total or time.monotonic() >= deadline:
                return counts
            # Counting a big run's requests is work for the database that the run
            # needs too: ask at most a tenth of the time, and at least every 5 s.
            pause = min(max(FOLLOW_INTERVAL, 9 * took), 5.0)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))


def _describe_progress(counts: dict[str, int]) -> str:
    confirming = counts.get("confirming", 0)
    return f"validating, {confirming} confirming" if confirming else "validating"


def _print_run(summary: dict[str, Any]) -> None:
    """How far the run got, a line per outcome with how many of those changes the
    guard holds, and a line per base URL whose guard is tripped."""
    from worker.checks.held import describe_tripped

    run, held_now = summary["run_id"], summary["held"]
    lines = [f"run {run}: {summary['finished']} of {summary['requests']} checks finished"]
    width = max((len(outcome) for outcome in summary["outcomes"]), default=0)
    for outcome, count in sorted(summary["outcomes"].items()):
        line = f"  {outcome:<{width}}  {count}"
        if held_now.get(outcome):
            line += f" ({held_now[outcome]} held by the guard: those teams stay valid)"
        lines.append(line)
    if summary["tripped_guards"]:
        trips = describe_tripped(summary["tripped_guards"])
        lines.append(f"guard: {trips} — `ogv changes list`")
    console.print("\n".join(lines), markup=False, highlight=False)


@app.command()
def validate(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    team: Annotated[str, typer.Option(help="The team id.")],
    wait: Annotated[
        float | None, typer.Option(help="Wait up to this many seconds for the outcome.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a check of a team's key; with --wait, print its outcome."""
    if not is_team_id(team):
        fail(
            "invalid",
            "--team takes a team id, not a label: ids look like 2-payments "
            "(<organization integration id>-<label>); `ogv status --org N` lists them",
            as_json,
        )
    from models import Requester
    from worker.celery import app as celery_app
    from worker.database import session_factory
    from worker.enqueue import request_validation, wait_for

    sessions = session_factory()
    request_id = request_validation(
        sessions,
        celery_app,
        organization_id=org,
        integration_id=integration,
        team_id=team,
        requested_by=Requester.CLI,
    ).request_id
    if wait is None:
        emit({"request_id": request_id}, as_json, lambda: console.print(f"queued {request_id}"))
        return
    view = wait_for(sessions, request_id, wait)
    if view is None or not (view.is_final or view.is_confirming):
        fail("timeout", f"request {request_id} has no outcome after {wait}s", as_json, 2)
    emit(view, as_json, lambda: console.print(_verdict(view), markup=False, highlight=False))


def _verdict(view: Any) -> str:
    """A request's outcome in one line; a confirming one's names its second check."""
    if view.is_confirming:
        return f"{confirming(view)}; {view.message}"
    hint = f"\nhint {view.hint.code}: {view.hint.text}" if view.hint else ""
    return f"{view.outcome}: {view.message}{hint}"


STATUS_PAGE = 50
"""Teams `ogv status` shows when not told `--limit` (`--json` then lists them all)."""
STATUS_MAX_PAGE = 10_000
JSON_PAGE = 1_000
"""Teams read per query while `ogv status --json` lists them all."""


@app.command()
def status(
    org: Annotated[int | None, typer.Option(help="Only this organization.")] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only teams with this status (repeatable)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help=f"Show at most this many teams (default {STATUS_PAGE}; --json: all of them)."
        ),
    ] = None,
    after: Annotated[
        str | None, typer.Option(help="Start after this cursor: the next one a page printed.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Count the teams by status, then list them by label, one line each."""
    from models import TeamStatus
    from worker.checks import platform_health
    from worker.cursors import BadCursor
    from worker.database import session_factory
    from worker.web import teams

    names = [s.value for s in TeamStatus]
    if any(name not in names for name in only or []):
        fail("invalid", f"--status takes {', '.join(names)}", as_json)
    if limit is not None and not 1 <= limit <= STATUS_MAX_PAGE:
        fail("invalid", f"--limit takes 1 to {STATUS_MAX_PAGE}", as_json)
    if after is not None:
        try:
            teams.decode_place(after)
        except BadCursor:
            fail("invalid", "--after takes the next cursor an `ogv status` page printed", as_json)
    statuses = [TeamStatus(name) for name in dict.fromkeys(only or [])]
    sessions = session_factory()

    def page(size: int, cursor: str | None) -> teams.TeamPage:
        with sessions() as session:
            return teams.natural_page(session, org, statuses=statuses, limit=size, after=cursor)

    with sessions() as session:
        summary = teams.count_by_status(session, org)
        unavailable = platform_health.states(session, unavailable_only=True)
        tripped = [] if as_json else _tripped_guards(session)
    if as_json and limit is None:
        _list_every_team(summary, page, after)
        return
    shown = page(limit or STATUS_PAGE, after)
    options = [*(["--org", str(org)] if org is not None else [])]
    options += [arg for name in statuses for arg in ("--status", name.value)]
    options += ["--limit", str(limit)] if limit is not None else []
    listing = {"summary": summary, "teams": shown.teams, "next_cursor": shown.next_cursor}
    emit(listing, as_json, lambda: _print_status(listing, unavailable, tripped, options))


def _list_every_team(summary: dict[str, int], page: Any, after: str | None) -> None:
    """`ogv status --json` without --limit: every team, read a page at a time."""

    def every() -> Any:
        cursor = after
        while True:
            found = page(JSON_PAGE, cursor)
            yield from found.teams
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    emit_listing({"summary": summary}, "teams", every(), {"next_cursor": None})


def _print_status(
    listing: dict[str, Any],
    unavailable: Sequence[Any],
    tripped: Sequence[Any],
    options: Sequence[str],
) -> None:
    """The base URLs that are unavailable now and those whose guard is tripped (if
    any), the count of teams by status, then a line per team at the terminal's width
    (80 columns when it is not a terminal), and how to ask for the next page."""
    from worker.checks.held import describe_tripped
    from worker.checks.platform_health import describe

    lines = []
    if unavailable:
        lines.append(f"platforms: {describe(unavailable)}")
    if tripped:
        lines.append(f"guard: {describe_tripped(tripped)} — `ogv changes list`")
    counts = listing["summary"]
    total = sum(counts.values())
    by_status = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    lines.append(f"{total} teams: {by_status}" if total else "no teams")
    rows = [_status_cells(row) for row in listing["teams"]]
    if rows:
        lines += one_line_rows(
            ("team", "status", "checked", "note"), rows, console.width, NARROWING
        )
    if listing["next_cursor"]:
        lines.append(f"next: ogv status {' '.join([*options, '--after', listing['next_cursor']])}")
    console.print("\n".join(lines), markup=False, highlight=False, crop=False)


def _tripped_guards(session: Any) -> list[Any]:
    """The base URLs whose mass-change guard is tripped now."""
    from worker.checks import guard, held
    from worker.settings import get_settings

    settings = get_settings()
    report = held.guard_report(
        session, guard.windows_for(settings), guard.Thresholds.from_settings(settings)
    )
    return [g for g in report if g.tripped]


@app.command()
def platforms(as_json: JsonOption = False) -> None:
    """Show how each base URL has been answering: available, or unavailable since when."""
    from worker.checks import platform_health
    from worker.database import session_factory

    with session_factory()() as session:
        rows = platform_health.states(session)
    emit(rows, as_json, lambda: console.print(_platforms_table(rows)))


def _platforms_table(rows: Sequence[Any]) -> Table:
    table = Table("base URL", "platform", "state", "since", "window (unrecognised/answers)")
    table.columns[0].overflow = "fold"  # hosts often share a long prefix: never cut one
    for row in rows:
        state = "[red]unavailable[/red]" if row.unavailable else "[green]available[/green]"
        since = row.unavailable_since if row.unavailable else row.changed_at
        table.add_row(
            row.base_url,
            row.platform,
            state,
            since.strftime("%Y-%m-%d %H:%M") if since else "-",
            f"{row.unrecognised}/{row.answers} since {row.window_started_at:%H:%M:%S}",
        )
    return table


def _status_cells(row: teams.TeamRow) -> tuple[str, str, str, str]:
    checked = f"{row.last_checked_at:%Y-%m-%d %H:%M}" if row.last_checked_at else "-"
    return (row.team_id, row.status, checked, _note(row))


def _note(row: teams.TeamRow) -> str:
    """Where else the key works, the last error code (a valid team has none), and the
    hint: what to do, and where."""
    notes = [f"works on {', '.join(row.works_on)}"] if row.works_on else []
    if row.last_error_code:
        error = row.last_error_code
        notes.append(f"{error} (HTTP {row.last_http_status})" if row.last_http_status else error)
    if row.hint is not None:
        notes.append(f"{row.hint.code}: {row.hint.text}")
    return "; ".join(notes)
