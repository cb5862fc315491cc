"""`ogv validate`, `revalidate`, `status` and `platforms`: ask for checks, follow
them, and show what they found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.operations.cli.output import JsonOption, console, emit, fail, is_team_id

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
    from models.db import session_factory
    from worker.celery import app as celery_app
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
    summary = {
        "run_id": run_id,
        "requests": sent.requests,
        "batches": sent.batches,
        "finished": done,
        "outcomes": counts,
    }
    emit(summary, as_json, lambda: console.print(_outcome_table(summary)))
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
            bar.update(task, completed=done)
            if done >= total or time.monotonic() >= deadline:
                return counts
            # Counting a big run's requests is work for the database that the run
            # needs too: ask at most a tenth of the time, and at least every 5 s.
            pause = min(max(FOLLOW_INTERVAL, 9 * took), 5.0)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))


def _outcome_table(summary: dict[str, Any]) -> Table:
    table = Table("outcome", "teams", title=f"run {summary['run_id']}")
    for outcome, count in sorted(summary["outcomes"].items()):
        table.add_row(outcome, str(count))
    return table


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
    from models.db import session_factory
    from worker.celery import app as celery_app
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
    if view is None or not view.is_final:
        fail("timeout", f"request {request_id} has no outcome after {wait}s", as_json, 2)
    hint = f"\nhint {view.hint.code}: {view.hint.text}" if view.hint else ""
    emit(
        view,
        as_json,
        lambda: console.print(f"{view.outcome}: {view.message}{hint}", highlight=False),
    )


@app.command()
def status(
    org: Annotated[int | None, typer.Option(help="Only this organization.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show every team with its status, last check and last error."""
    from models.db import session_factory
    from worker.checks import platform_health
    from worker.web import teams

    with session_factory()() as session:
        rows = teams.list_teams(session, org)
        unavailable = platform_health.states(session, unavailable_only=True)
        tripped = [] if as_json else _tripped_guards(session)
    emit(rows, as_json, lambda: _print_status(rows, unavailable, tripped))


def _print_status(
    rows: Sequence[teams.TeamRow], unavailable: Sequence[Any], tripped: Sequence[Any] = ()
) -> None:
    """The table, under a line naming the base URLs that are unavailable now, and one
    naming those whose mass-change guard is tripped, if any."""
    from worker.checks.held import describe_tripped
    from worker.checks.platform_health import describe

    if unavailable:
        console.print(f"[yellow]platforms[/yellow]: {describe(unavailable)}", highlight=False)
    if tripped:
        console.print(
            f"[red]guard[/red]: {describe_tripped(tripped)} — `ogv changes list`", highlight=False
        )
    console.print(_status_table(rows))


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
    from models.db import session_factory
    from worker.checks import platform_health

    with session_factory()() as session:
        rows = platform_health.states(session)
    emit(rows, as_json, lambda: console.print(_platforms_table(rows)))


def _platforms_table(rows: Sequence[Any]) -> Table:
    table = Table("base URL", "platform", "state", "since", "window (unrecognised/answers)")
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


def _status_table(rows: Sequence[teams.TeamRow]) -> Table:
    # Fits 80 columns: where a team lives goes under its id, and long text folds.
    table = Table("team", "status", "checked", "note")
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        checked = row.last_checked_at.strftime("%Y-%m-%d %H:%M") if row.last_checked_at else "-"
        where = f"[dim]{row.account} on {row.platform} ({row.probe})[/dim]"
        if row.deadline is not None:
            where += f"\n[dim]until {row.deadline:%Y-%m-%d} ({row.days_left} days left)[/dim]"
        table.add_row(f"{row.team_id}\n{where}", row.status, checked, _note(row))
    return table


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
