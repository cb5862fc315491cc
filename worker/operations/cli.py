"""`ogv`: the command line of the service. Every command takes `--json` for scripts.

Keys are read from standard input, never from argv (argv is visible to every
user of the machine through `ps`), and no command prints one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from worker.web import teams

# Each command imports what it needs (SQLAlchemy, settings, Celery, aiohttp...) inside
# itself: `ogv --help` and `ogv status` start without the rest (bench/startup.py).
app = typer.Typer(no_args_is_help=True, help="Validate stored Opsgenie integration keys.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
integration_app = typer.Typer(no_args_is_help=True, help="Opsgenie accounts.")
team_app = typer.Typer(no_args_is_help=True, help="Teams and their integration keys.")
keys_app = typer.Typer(no_args_is_help=True, help="The encryption keys that protect stored keys.")
migration_app = typer.Typer(
    no_args_is_help=True, help="Moving to JSM Operations before Opsgenie's end of support."
)
app.add_typer(db_app, name="db")
app.add_typer(integration_app, name="integration")
app.add_typer(team_app, name="team")
app.add_typer(keys_app, name="keys")
changes_app = typer.Typer(
    no_args_is_help=True, help="Status changes the mass-change guard holds back."
)
app.add_typer(migration_app, name="migration")
app.add_typer(changes_app, name="changes")

console = Console(soft_wrap=True)  # a line of output stays one line, at any width
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TEAM_ID = re.compile(r"^[0-9]+-.")
"""Team ids are `<organization integration id>-<label>` (`models.Team.make_id`)."""


class ExitCode:
    OK = 0
    REFUSED = 1
    TIMED_OUT = 2
    UNHEALTHY = 3


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(data), indent=2) + "\n")
    else:
        render()


def fail(code: str, message: str, as_json: bool, exit_code: int = ExitCode.REFUSED) -> None:
    """Report a refused command the same way in both output modes, and exit."""
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    else:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error[/red] ({code}): {message}", highlight=False
        )
    raise typer.Exit(exit_code)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOption = False) -> None:
    """Create or migrate the schema to the newest revision."""
    from models.migrate import upgrade
    from worker.settings import get_settings

    settings = get_settings()
    applied = upgrade(settings.effective_database_url)
    emit(
        {"applied": applied},
        as_json,
        lambda: console.print(
            f"applied {', '.join(applied)}: the schema is up to date"
            if applied
            else "the schema was already up to date"
        ),
    )


@integration_app.command("add")
def integration_add(
    org: Annotated[int, typer.Option(help="The organization id.")],
    account: Annotated[str, typer.Option(help="The account name, e.g. acme.")],
    platform: Annotated[
        str | None,
        typer.Option(help="opsgenie, opsgenie-eu or jsm-ops (default: from --base-url)."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="The API base URL (default: the platform's; another must be allowed)."),
    ] = None,
    probe: Annotated[
        str | None,
        typer.Option(help="authenticate or alerts (default: the platform's; OGV_PROBE)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Install an account on Opsgenie (US or EU) or JSM Operations for an organization."""
    from models.db import session_factory
    from worker import inventory
    from worker.checks.rules import CheckOptions
    from worker.errors import RecordError
    from worker.platforms.baseurl import BaseUrlError
    from worker.settings import get_settings

    settings = get_settings()
    try:
        chosen, url, chosen_probe = inventory.choose_platform(
            platform, base_url, probe, CheckOptions.from_settings(settings).base_urls
        )
        with session_factory().begin() as session:
            integration, link = inventory.add_integration(
                session,
                organization_id=org,
                account_name=account,
                base_url=url,
                allowed_base_urls=settings.allowed_base_urls,
                platform=chosen,
                probe=chosen_probe,
            )
            result = {
                "integration_id": integration.id,
                "organization_integration_id": link.id,
                "platform": integration.platform,
                "base_url": integration.base_url,
                "probe": chosen.probe_for(integration.probe, settings.probe),
            }
    except RecordError as exc:
        fail(exc.code, str(exc), as_json)
    except BaseUrlError as exc:
        fail("invalid_base_url", f"{exc}; add it to OGV_ALLOWED_BASE_URLS to use it", as_json)
    emit(
        result,
        as_json,
        lambda: console.print(
            f"integration {result['integration_id']} "
            f"(organization integration {result['organization_integration_id']}) "
            f"on {result['platform']}, probe {result['probe']}"
        ),
    )


@integration_app.command("migrate")
def integration_migrate(
    integration: Annotated[int, typer.Option(help="The integration id.")],
    to: Annotated[str, typer.Option("--to", help="The platform to move to: jsm-ops.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Move even if some teams' keys do not work there.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Move an integration, for every organization linked to it, to JSM Operations.

    Refused unless every team's key works there as last probed (`ogv migration
    report`), or with --force.
    """
    from models.db import session_factory
    from worker.checks.rules import CheckOptions
    from worker.operations import migration
    from worker.settings import get_settings

    settings = get_settings()
    _log_events(settings)
    try:
        with session_factory().begin() as session:
            move = migration.move_integration(
                session,
                integration,
                to,
                base_urls=CheckOptions.from_settings(settings).base_urls,
                allowed_base_urls=settings.allowed_base_urls,
                force=force,
                dry_run=dry_run,
            )
    except migration.MigrationRefused as exc:
        fail(exc.code, str(exc), as_json)
    if not move.dry_run:
        migration.log_move(move)
    emit(move, as_json, lambda: console.print(_describe_move(move), highlight=False))


def _describe_move(move: Any) -> str:
    ready = f"{move.teams_ready} of {move.teams} teams work there"
    where = (
        f"integration {move.integration_id} ({move.account}) from {move.from_platform} "
        f"to {move.to_platform} ({move.to_base_url})"
    )
    if move.dry_run:
        return f"dry run: would move {where}; {ready}; nothing changed"
    return f"moved {where}; {ready}{' (forced)' if move.forced else ''}"


def _log_events(settings: Any) -> None:
    """Send log events (`integration.migrated`) to stderr, unless the host process
    (a test runner) configured logging already."""
    import logging

    from worker.logs import configure_logging

    if not logging.getLogger().handlers:
        configure_logging(settings.log_level, settings.log_format)


@migration_app.command("report")
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
    table = Table("organization", "teams", "works", "fails", "unknown")
    for column in table.columns[1:]:
        column.justify = "right"
    for row in report.organizations:
        figures = (row.organization_id, row.teams, row.works, row.fails, row.unknown)
        table.add_row(*(str(figure) for figure in figures))
    console.print(table)
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


MOVE_HINT = "Move one with: ogv integration migrate --integration ID --to jsm-ops"


@team_app.command("add")
def team_add(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    label: Annotated[str, typer.Option(help="The team's label, unique in the integration.")],
    as_json: JsonOption = False,
) -> None:
    """Store a team's integration key, read from standard input (asked for, unechoed,
    on a terminal)."""
    from models.crypto import KeyVault
    from models.db import session_factory
    from worker import inventory
    from worker.errors import RecordError
    from worker.settings import get_settings

    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("Integration key (not shown): ").strip()
    else:
        key = sys.stdin.readline().strip()
    settings = get_settings()
    try:
        with session_factory().begin() as session:
            team = inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration,
                label=label,
                integration_key=key,
                vault=KeyVault(settings.fernet_keys()),
            )
            team_id = team.id
    except RecordError as exc:
        fail(exc.code, str(exc), as_json)
    emit({"team_id": team_id}, as_json, lambda: console.print(f"team {team_id}"))


@team_app.command("import")
def team_import(
    source: Annotated[str, typer.Argument(help="A JSON-lines file, or - for standard input.")],
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Write the good lines even if some are refused."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Add teams in bulk from JSON lines: all of them, or none if a line is refused.

    Every refused line is reported by number; the keys never appear in the output.
    """
    from models.crypto import KeyVault
    from models.db import session_factory
    from worker.operations.importer import import_teams
    from worker.settings import get_settings

    settings = get_settings()
    vault = KeyVault(settings.fernet_keys())
    try:
        handle = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    except OSError as exc:
        fail("not_found", f"cannot read {source}: {exc.strerror or exc}", as_json)
    with handle, _import_progress(handle, quiet=as_json) as progress:
        report = import_teams(
            session_factory(), handle, vault, skip_invalid=skip_invalid, on_progress=progress
        )
    emit(report, as_json, lambda: _print_import(report))
    if report.errors:
        raise typer.Exit(ExitCode.REFUSED)


@contextlib.contextmanager
def _import_progress(handle: Any, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal: bytes read of the file (lines, for a pipe)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn

    try:
        size: int | None = os.fstat(handle.fileno()).st_size or None
    except (OSError, ValueError):
        size = None
    stderr = Console(stderr=True)
    with Progress(
        "importing", BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=stderr,
        disable=quiet or not stderr.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("importing", total=size)
        yield lambda lines: bar.update(task, completed=handle.tell() if size else lines)


def _print_import(report: Any) -> None:
    refused = len(report.errors)
    if report.written:
        console.print(f"imported {report.imported} teams, {refused} lines refused")
    else:
        console.print(
            f"nothing imported: {refused} of {report.lines} lines refused "
            "(fix them, or give --skip-invalid to import the rest)"
        )
    for error in report.errors:
        console.print(f"  line {error.line}: {error.code}: {error.message}", highlight=False)


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
    if not TEAM_ID.match(team):
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
    assert view is not None
    emit(
        view,
        as_json,
        lambda: console.print(f"{view.outcome}: {view.message}", highlight=False),
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
        table.add_row(f"{row.team_id}\n{where}", row.status, checked, _note(row))
    return table


def _note(row: teams.TeamRow) -> str:
    """Where else the key works, and the last error code (a valid team has none)."""
    notes = [f"works on {', '.join(row.works_on)}"] if row.works_on else []
    if row.last_error_code:
        error = row.last_error_code
        notes.append(f"{error} (HTTP {row.last_http_status})" if row.last_http_status else error)
    return "; ".join(notes)


BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help="Only the held changes of this base URL.")
]
TeamOption = Annotated[
    list[str] | None,
    typer.Option("--team", help="Only this team's held change (a team id; repeatable)."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every held change.")]


def _held_selection(
    base_url: str | None,
    team_ids: Sequence[str] | None,
    everything: bool,
    as_json: bool,
    required: bool = True,
) -> Any:
    """The held changes an operator named, or a one-line refusal (never echoing input)."""
    from models.integration import TEAM_ID_MAX, TEAM_ID_PATTERN
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
    if any(len(t) > TEAM_ID_MAX or not re.fullmatch(TEAM_ID_PATTERN, t) for t in team_ids):
        fail(
            "invalid",
            "--team takes team ids, which look like 2-payments "
            "(<organization integration id>-<label>); `ogv changes list` lists the held ones",
            as_json,
        )
    return Selection(base_url, tuple(dict.fromkeys(team_ids)))


@changes_app.command("list")
def changes_list(base_url: BaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Show each base URL's mass-change guard, and the changes it holds."""
    from models.db import session_factory
    from worker.checks import guard, held
    from worker.settings import get_settings

    selection = _held_selection(base_url, None, False, as_json, required=False)
    settings = get_settings()
    with session_factory()() as session:
        guards = held.guard_report(
            session, guard.windows_for(settings), guard.Thresholds.from_settings(settings)
        )
        rows = held.list_held(session, selection)
    if selection.base_url is not None:
        guards = [g for g in guards if g.base_url == selection.base_url]
    emit({"guard": guards, "held": rows}, as_json, lambda: _print_held(guards, rows))


def _print_held(guards: Sequence[Any], rows: Sequence[Any]) -> None:
    """The guard of each base URL, then the held changes; fits 80 columns."""
    if not guards:
        console.print("guard: no base URL counted yet", highlight=False)
    for g in guards:
        window = f"window: {g.changes} changes of {g.checks} checks, {g.accounts} accounts"
        if g.tripped:
            since = f" since {g.tripped_at:%Y-%m-%d %H:%M:%S} UTC" if g.tripped_at else ""
            state = f"[red]tripped[/red]{since}"
        else:
            state = "[green]ok[/green]"
        console.print(f"guard {g.base_url}: {state}; {window}; {g.held} held", highlight=False)
    if not rows:
        console.print("no changes are held")
        return
    table = Table("team", "change", "evidence", "held at")
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        where = f"[dim]{row.label}, {row.account} at {row.base_url}[/dim]"
        evidence = ", ".join(
            part
            for part in (
                f"HTTP {row.http_status}" if row.http_status else "",
                row.error_code or "",
                row.message or "",
            )
            if part
        )
        table.add_row(
            f"{row.team_id}\n{where}",
            f"{row.old_status} → {row.new_status}",
            evidence,
            f"{row.held_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@changes_app.command("release")
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
    from worker.checks import held
    from worker.settings import get_settings

    selection = _held_selection(base_url, team, all_held, as_json)
    settings = get_settings()
    _log_events(settings)
    with session_factory().begin() as session:
        released = held.release(session, selection)
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


@changes_app.command("discard")
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
    from worker.celery import app as celery_app
    from worker.checks import held
    from worker.periodic import recheck
    from worker.settings import get_settings

    settings = get_settings()
    sessions = session_factory()
    with sessions.begin() as session:
        asks = held.discard(session, selection)
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


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key for OGV_ENCRYPTION_KEYS."""
    from cryptography.fernet import Fernet

    sys.stdout.write(Fernet.generate_key().decode() + "\n")


@keys_app.command("rotate")
def keys_rotate(
    after: Annotated[str, typer.Option(help="Resume after this team id.")] = "",
    batch_size: Annotated[int, typer.Option(help="Teams per transaction.")] = 500,
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt every stored key under the first key of OGV_ENCRYPTION_KEYS."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from models.crypto import KeyVault
    from models.db import session_factory
    from worker.operations.rotation import count_teams, rotate
    from worker.settings import get_settings

    settings = get_settings()
    sessions = session_factory()
    vault = KeyVault(settings.fernet_keys())
    total = count_teams(sessions, after)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), disable=as_json) as bar:
        task = bar.add_task("re-encrypting", total=total)
        report = rotate(
            sessions,
            vault,
            after=after,
            batch_size=batch_size,
            progress=lambda done: bar.update(task, completed=done),
        )
    emit(report, as_json, lambda: _print_rotation(report))
    if report.undecryptable:
        raise typer.Exit(ExitCode.REFUSED)


def _print_rotation(report: Any) -> None:
    console.print(f"re-encrypted {report.rotated} keys")
    for team_id in report.undecryptable:
        console.print(
            f"  team {team_id}: no configured encryption key decrypts its key", highlight=False
        )


@app.command("fake-opsgenie")
def fake_opsgenie(
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8099,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    scenario: Annotated[
        Path | None,
        typer.Option(help="A scenario JSON file (format: worker/testing/scenario.py)."),
    ] = None,
) -> None:
    """Serve the built-in fake Opsgenie for tests and demos.

    One server stands for three hosts, by path prefix:

      opsgenie      /                       authenticate and alerts
      opsgenie-eu   /eu/                    authenticate and alerts
      jsm-ops       /jsm/ops/integration/   alerts only (authenticate is 404)

    A scenario gives each key a behaviour, e.g. {"keys": {"k1": "valid", "k2":
    {"behaviour": "throttle", "times": 2, "account": "acme"}}, "default": "invalid_key",
    "hosts": {"opsgenie": "retired"}}.

    Opsgenie's own answers (JSON, with X-Request-ID):
      valid             200 success body ({"result"} / {"data": []})
      invalid_key       401
      no_access         403, code 40301
      no_config_access  403 on authenticate, 200 on alerts
      unprocessable     422
      malformed_key     422 "Key format is not valid!"
      retired           410 "This API is deprecated and no longer available"
      throttle          429 + X-RateLimit-* headers, `times` times, then 200
      server_error      `status` (5xx), `times` times, then 200
      large_body        200, large_body_bytes long
      eu_only           valid on opsgenie-eu, invalid_key elsewhere
      jsm_only          valid on jsm-ops, invalid_key elsewhere
    Intermediaries (HTML or empty, no X-Request-ID):
      redirect          302 to https://id.atlassian.com/login
      html_404          404 nginx page
      gateway_timeout   408 load balancer page
      empty_200         200, empty body
      captive_portal    200 HTML login page
    The network:
      hang              sleeps hang_seconds, then 200
      reset             drops the connection, no answer

    "hosts" overrides a whole host, whatever the key, with one of: invalid_key, retired,
    server_error (503), redirect, html_404, gateway_timeout, empty_200, captive_portal,
    hang (then drops the connection), reset. The admin API (/_fake/scenario, /_fake/keys/KEY,
    /_fake/hosts/HOST, /_fake/stats, /_fake/reset) changes it while running.
    """
    from worker.testing.fake_opsgenie import serve
    from worker.testing.scenario import Scenario

    loaded = Scenario.from_json(scenario.read_text()) if scenario else Scenario(keys={})
    serve(host, port, loaded)


@app.command()
def api(
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    insecure_local: Annotated[
        bool, typer.Option("--insecure-local", help="Allow no OGV_API_TOKEN; loopback only.")
    ] = False,
) -> None:
    """Serve the HTTP API for web apps (docs/WEB_APPS.md)."""
    from worker.settings import get_settings
    from worker.web.api import StartRefused, serve

    try:
        serve(get_settings(), host, port, insecure_local=insecure_local)
    except StartRefused as exc:
        fail(exc.code, str(exc), as_json=False)


@app.command()
def flower(
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 5555,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    insecure_local: Annotated[
        bool,
        typer.Option("--insecure-local", help="Allow no OGV_FLOWER_BASIC_AUTH; loopback only."),
    ] = False,
) -> None:
    """Start Flower on the configured broker, behind OGV_FLOWER_BASIC_AUTH."""
    from worker.celery import app as celery_app
    from worker.operations.flower import FlowerRefused, plan, run
    from worker.settings import get_settings

    try:
        flower_plan = plan(get_settings(), port=port, host=host, insecure_local=insecure_local)
    except FlowerRefused as exc:
        fail(exc.code, str(exc), as_json=False)
    if not flower_plan.sees_events:
        Console(stderr=True).print(
            "[yellow]warning[/yellow]: the embedded broker carries no task events; "
            "Flower shows tasks only with OGV_BROKER_URL on Redis or RabbitMQ"
        )
    run(celery_app, flower_plan)


@app.command()
def health(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each check.")] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Check the database, the broker, and that a worker consumes; exit 3 if not."""
    from models.db import session_factory
    from worker.celery import app as celery_app
    from worker.checks import guard, held
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
    emit(report, as_json, lambda: console.print(report.table()))
    if not report.ok:
        raise typer.Exit(ExitCode.REFUSED)


def main() -> None:
    """`ogv`: what an operator can act on is one line (`--json`: `{"error": ...}`), not a
    traceback; `OGV_LOG_LEVEL=DEBUG` keeps the traceback."""
    try:
        app()
    except Exception as exc:
        # Imported only now: it knows the errors of SQLAlchemy, pydantic, kombu and Redis.
        from worker.operations.failures import explain

        refusal = explain(exc)
        if refusal is None or os.environ.get("OGV_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        if "--json" in sys.argv[1:]:
            sys.stdout.write(json.dumps(refusal.as_json()) + "\n")
        else:
            sys.stderr.write(refusal.as_line() + "\n")
        sys.exit(ExitCode.REFUSED)
