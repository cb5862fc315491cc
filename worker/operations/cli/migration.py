"""`ogv migration`: how ready the fleet is to move to JSM Operations."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.operations.cli.output import JsonOption, console, emit, fail

app = typer.Typer(
    no_args_is_help=True, help="Moving to JSM Operations before Opsgenie's end of support."
)


@app.command("report")
def migration_report(
    org: Annotated[int | None, typer.Option(help="Only this organization.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Probe every team on Opsgenie on JSM Operations, then report per organization.

    Read-only (GET v2/alerts?limit=1), paced per account like the workers. Records
    each team's jsm_ops: works, fails or unknown.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from models.db import session_factory
    from worker import readiness
    from worker.checks.rules import CheckOptions
    from worker.checks.runtime import Runtime
    from worker.operations import migration
    from worker.settings import get_settings

    settings = get_settings()
    sessions = session_factory()
    try:
        migration.jsm_base_url(
            CheckOptions.from_settings(settings).base_urls, settings.allowed_base_urls
        )
        with sessions() as session:
            total = migration.teams_to_probe(session, org)
    except migration.MigrationRefused as exc:
        fail(exc.code, str(exc), as_json)
    runtime = Runtime.start(settings)
    try:
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=as_json) as bar:
            task = bar.add_task("asking JSM Ops", total=total)
            probed = migration.probe_fleet(
                migration.collaborators(settings, runtime),
                organization_id=org,
                page_size=settings.batch_size,
                on_probed=lambda done: bar.advance(task, done),
            )
    finally:
        runtime.close()
    with sessions() as session:
        found = dataclasses.replace(readiness.report(session, org), probed=probed)
    emit(found.as_dict(), as_json, lambda: _print_migration_report(found))


READY_IDS_SHOWN = 10


def _print_migration_report(report: Any) -> None:
    """A table that fits 80 columns, between the deadline and what to move next."""
    import textwrap

    probed = report.probed
    console.print(
        f"Opsgenie ends support on {report.end_of_support:%Y-%m-%d}: {report.days_left} days left.",
        highlight=False,
    )
    console.print(
        f"Asked JSM Operations about {probed.teams} teams: {probed.works} work, "
        f"{probed.fails} fail, {probed.unknown} unknown.",
        highlight=False,
    )
    table = Table("organization", "teams", "works", "fails", "unknown", "deadline", "days")
    for column in table.columns[1:]:
        column.justify = "right"
    for row in report.organizations:
        figures = (row.organization_id, row.teams, row.works, row.fails, row.unknown)
        table.add_row(
            *(str(figure) for figure in figures), f"{row.deadline:%Y-%m-%d}", str(row.days_left)
        )
    console.print(table)
    for line in _sooner(report):
        console.print(line, highlight=False)
    ready = [i.integration_id for i in report.integrations if i.ready]
    if not ready:
        console.print("No integration is ready to move yet.")
        return
    shown = ", ".join(str(i) for i in ready[:READY_IDS_SHOWN])
    more = (
        f" and {len(ready) - READY_IDS_SHOWN} more (--json)" if len(ready) > READY_IDS_SHOWN else ""
    )
    # The console never wraps (one line of output stays one line): wrap to 80 here.
    sentence = f"Ready to move (every team works on JSM Ops): integrations {shown}{more}."
    for line in [*textwrap.wrap(sentence, 80), MOVE_HINT]:
        console.print(line, highlight=False)


def _sooner(report: Any) -> list[str]:
    """A line per integration whose deadline comes before the end of support."""
    return [
        f"Integration {i.integration_id} stops on {i.deadline:%Y-%m-%d} "
        f"({i.deadline_reason.replace('_', ' ')}): {i.days_left} days left."
        for i in report.integrations
        if i.deadline != report.end_of_support
    ]


MOVE_HINT = "Move one with: ogv integration migrate --integration ID --to jsm-ops"
