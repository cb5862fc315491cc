"""`ogv integration`: install an Opsgenie or JSM Operations account for an
organization, list, show, disable, enable and remove one, and move one to JSM
Operations. The commands that read or change one go through
`worker.web.client.ValidationClient`, as a web app does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from worker.operations.cli.output import JsonOption, console, emit, fail, log_events

app = typer.Typer(no_args_is_help=True, help="Opsgenie accounts.")


@app.command("add")
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
    """Install an account on Opsgenie (US or EU) or JSM Operations for an organization.

    The organization gets an integration of its own, even for an account name another
    organization installed: that one's probe, platform and pacing are never touched.
    """
    from worker import audit, inventory
    from worker.checks.rules import CheckOptions
    from worker.database import session_factory
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
            audit.record(
                session,
                audit.cli_actor(),
                "integration.add",
                organization_id=org,
                target=f"integration:{integration.id}",
                details={k: v for k, v in result.items() if k != "integration_id"},
            )
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


@app.command("migrate")
def integration_migrate(
    integration: Annotated[int, typer.Option(help="The integration id.")],
    to: Annotated[str, typer.Option("--to", help="The platform to move to: jsm-ops.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Move even if some teams' keys do not work there.")
    ] = False,
    org: Annotated[
        int | None,
        typer.Option(help="Refuse unless the integration is this organization's."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Move an integration (one organization's own) to JSM Operations.

    Refused unless every team's key works there as last probed (`ogv migration
    report`), or with --force.
    """
    from worker import audit
    from worker.checks.rules import CheckOptions
    from worker.database import session_factory
    from worker.operations import migration
    from worker.settings import get_settings

    settings = get_settings()
    log_events(settings)
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
                organization_id=org,
            )
            if not move.dry_run:
                audit.record(
                    session,
                    audit.cli_actor(),
                    "integration.migrate",
                    organization_id=move.organization_id,
                    target=f"integration:{integration}",
                    details={
                        "from": move.from_platform,
                        "to": move.to_platform,
                        "teams": move.teams,
                        "teams_ready": move.teams_ready,
                        "forced": move.forced,
                    },
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


@app.command("list")
def integration_list(
    org: Annotated[int, typer.Option(help="The organization id.")],
    status: Annotated[str | None, typer.Option(help="Only active or disabled ones.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1 to 100).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor of the last page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List an organization's integrations, a page at a time."""
    from models import IntegrationStatus

    if status is not None and status not in IntegrationStatus._value2member_map_:
        fail("invalid", "--status takes active or disabled", as_json)
    if not 1 <= limit <= 100:
        fail("invalid", "--limit takes 1 to 100", as_json)
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
        fail("invalid", "--cursor takes the next_cursor of the last page", as_json)
    with _client() as client:
        page = client.list_integrations(
            org,
            status=IntegrationStatus(status) if status else None,
            limit=limit,
            cursor=cursor,
        )
    emit(page, as_json, lambda: _print_integrations(page))


@app.command("show")
def integration_show(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    as_json: JsonOption = False,
) -> None:
    """Show one of an organization's integrations."""
    with _client() as client:
        view = client.get_integration(org, integration)
    if view is None:
        message = f"integration {integration} is not installed for organization {org}"
        fail("not_found", message, as_json)
    emit(view, as_json, lambda: console.print(_describe(view), highlight=False))


@app.command("disable")
def integration_disable(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    as_json: JsonOption = False,
) -> None:
    """Disable an integration: checks of its teams end invalid_integration until enabled."""
    _change(lambda client: client.disable_integration(org, integration), as_json)


@app.command("enable")
def integration_enable(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    as_json: JsonOption = False,
) -> None:
    """Enable a disabled integration again."""
    _change(lambda client: client.enable_integration(org, integration), as_json)


@app.command("remove")
def integration_remove(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    as_json: JsonOption = False,
) -> None:
    """Remove an integration from an organization, with its teams (their history stays
    until OGV_HISTORY_RETENTION_DAYS prunes it)."""
    removed = _change(lambda client: client.remove_integration(org, integration), as_json, False)
    emit(
        removed,
        as_json,
        lambda: console.print(
            f"removed integration {integration} of organization {org} and its {removed.teams} teams"
        ),
    )


def _client() -> Any:
    """The client the commands write through; the audit log names its writes
    `cli:<os user>`."""
    from models import Requester
    from worker import audit
    from worker.web.client import ValidationClient

    return ValidationClient.from_settings(requested_by=Requester.CLI, actor=audit.cli_actor())


def _change(write: Callable[[Any], Any], as_json: bool, show: bool = True) -> Any:
    """Run one write through the client; a refusal is one line."""
    from worker.errors import RecordError

    try:
        with _client() as client:
            done = write(client)
    except RecordError as exc:
        fail(exc.code, str(exc), as_json)
    if show:
        emit(done, as_json, lambda: console.print(_describe(done), highlight=False))
    return done


def _describe(view: Any) -> str:
    return (
        f"integration {view.integration_id} ({view.account}) on {view.platform}, "
        f"probe {view.probe}: {view.status}, {view.teams} teams; team ids start "
        f"{view.organization_integration_id}-"
    )


def _print_integrations(page: Any) -> None:
    from rich.table import Table

    table = Table("integration", "account", "platform", "status", "teams")
    for view in page.integrations:
        table.add_row(
            str(view.integration_id), view.account, view.platform, view.status, str(view.teams)
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", highlight=False)


CLEAR = "none"
"""What `--migrated-on` and `--switched-off-on` take to clear a recorded day."""


def _day(value: str | None, option: str, as_json: bool) -> Any:
    """The day an option names (YYYY-MM-DD), None for `none`, UNCHANGED when not given."""
    from datetime import date

    from worker import inventory

    if value is None:
        return inventory.UNCHANGED
    if value.strip().lower() == CLEAR:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        fail("invalid", f"{option} takes a day as YYYY-MM-DD, or {CLEAR} to clear it", as_json)


@app.command("update")
def integration_update(
    integration: Annotated[int, typer.Argument(help="The integration id.")],
    migrated_on: Annotated[
        str | None,
        typer.Option(help=f"The day the account migrated to JSM Operations (YYYY-MM-DD; {CLEAR})."),
    ] = None,
    switched_off_on: Annotated[
        str | None,
        typer.Option(help=f"The day its Opsgenie was switched off (YYYY-MM-DD; {CLEAR})."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record when an account migrated to JSM Operations, or was switched off.

    Its deadline becomes the earliest of 2027-04-05, the migration + 120 days and
    the switch-off; `none` clears a day recorded before.
    """
    import logging

    from worker import audit, inventory
    from worker.database import session_factory
    from worker.errors import RecordError
    from worker.platforms import get_platform
    from worker.platforms.sunset import account_deadline
    from worker.settings import get_settings

    if migrated_on is None and switched_off_on is None:
        fail("invalid", "give --migrated-on, --switched-off-on or both", as_json)
    changes = {
        "migrated_on": _day(migrated_on, "--migrated-on", as_json),
        "switched_off_on": _day(switched_off_on, "--switched-off-on", as_json),
    }
    log_events(get_settings())
    try:
        with session_factory().begin() as session:
            dates = inventory.update_dates(session, integration, **changes)
            audit.record(
                session,
                audit.cli_actor(),
                "integration.update",
                organization_id=dates.organization_id,
                target=f"integration:{integration}",
                details={
                    name: str(value) if value is not None else None
                    for name, value in changes.items()
                    if not isinstance(value, inventory.Unchanged)
                },
            )
    except RecordError as exc:
        fail(exc.code, str(exc), as_json)
    deadline = account_deadline(
        get_platform(dates.platform), dates.migrated_on, dates.switched_off_on
    )
    result = {
        "integration_id": dates.integration_id,
        "platform": dates.platform,
        "migrated_on": dates.migrated_on,
        "switched_off_on": dates.switched_off_on,
        "deadline": deadline.on if deadline else None,
        "deadline_reason": deadline.reason if deadline else None,
        "days_left": deadline.days_left() if deadline else None,
    }
    logging.getLogger("ogv.inventory").info(
        "integration.dates_updated",
        extra={
            "integration_id": dates.integration_id,
            "migrated_on": str(dates.migrated_on),
            "switched_off_on": str(dates.switched_off_on),
            "by": "cli",
        },
    )
    emit(result, as_json, lambda: console.print(_describe_dates(result), highlight=False))


def _describe_dates(result: dict[str, Any]) -> str:
    recorded = ", ".join(
        f"{name.replace('_', ' ')} {result[name] or '-'}"
        for name in ("migrated_on", "switched_off_on")
    )
    if result["deadline"] is None:
        return f"integration {result['integration_id']}: {recorded}; on {result['platform']}"
    return (
        f"integration {result['integration_id']}: {recorded}; deadline {result['deadline']} "
        f"({result['deadline_reason'].replace('_', ' ')}), {result['days_left']} days left"
    )
