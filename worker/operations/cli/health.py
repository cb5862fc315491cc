"""`ogv health` and `ogv demo`: is the service working, asked of its running parts
or shown by one run of the whole pipeline against the fake Opsgenie."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from worker.operations.cli.output import ExitCode, JsonOption, console, emit

app = typer.Typer()
"""Top-level commands: `ogv` adds them without a group of their own."""


@app.command()
def health(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each check.")] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Check the database, the broker, and that a worker consumes; exit 3 if not."""
    from worker.celery import app as celery_app
    from worker.checks import guard, held
    from worker.database import session_factory
    from worker.operations.health import run_checks, shared_state
    from worker.settings import get_settings

    settings = get_settings()
    windows, thresholds = guard.windows_for(settings), guard.Thresholds.from_settings(settings)
    report = run_checks(
        session_factory(),
        celery_app,
        timeout,
        read_guard=lambda session: held.guard_report(session, windows, thresholds),
    )
    shared = shared_state(settings, timeout)
    table = lambda: console.print(_health_table(report, shared), highlight=False)  # noqa: E731
    emit({**report.as_dict(), "shared_state": shared}, as_json, table)
    if not report.healthy:
        raise typer.Exit(ExitCode.UNHEALTHY)


def _health_table(report: Any, shared: dict[str, Any]) -> Table:
    table = Table("check", "status", "seconds", "detail")
    for check in report.checks:
        status = "[green]ok[/green]" if check.healthy else "[red]unhealthy[/red]"
        table.add_row(check.name, status, f"{check.seconds:.3f}", check.message)
    # Upstream, not ours: shown, never counted in the exit code.
    platforms = "[yellow]unavailable[/yellow]" if report.unavailable else "[green]ok[/green]"
    table.add_row("platforms", platforms, "-", report.platforms_summary())
    guard = "[green]ok[/green]" if report.tripped == [] else "[red]tripped[/red]"
    if report.tripped is None:
        guard = "[yellow]not read[/yellow]"
    table.add_row("guard", guard, "-", report.guard_summary())
    sunset = "[green]ok[/green]" if not report.sunset else "[yellow]warning[/yellow]"
    if report.failing_sunset:
        sunset = "[red]failing[/red]"
    elif report.sunset is None:
        sunset = "[yellow]not read[/yellow]"
    table.add_row("sunset", sunset, "-", report.sunset_summary())
    # Where pacing lives: per process is reported, not counted as a failure.
    state = "[green]ok[/green]" if shared["healthy"] else "[red]unreachable[/red]"
    if not shared["shared"]:
        state = "[yellow]per process[/yellow]"
    table.add_row("shared state", state, "-", shared["message"])
    return table


@app.command()
def demo(as_json: JsonOption = False) -> None:
    """Run the whole pipeline once against the built-in fake Opsgenie."""
    from worker.operations.demo import run_demo

    report = run_demo()
    emit(report, as_json, lambda: console.print(report.table(console.width)))
    if not report.ok:
        raise typer.Exit(ExitCode.REFUSED)
