"""`ogv integration`: install an Opsgenie or JSM Operations account for an
organization, and move one to JSM Operations."""

from __future__ import annotations

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
    """Install an account on Opsgenie (US or EU) or JSM Operations for an organization."""
    from models.db import session_factory
    from worker import audit, inventory
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
    as_json: JsonOption = False,
) -> None:
    """Move an integration, for every organization linked to it, to JSM Operations.

    Refused unless every team's key works there as last probed (`ogv migration
    report`), or with --force.
    """
    from models.db import session_factory
    from worker import audit
    from worker.checks.rules import CheckOptions
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
            )
            if not move.dry_run:
                audit.record(
                    session,
                    audit.cli_actor(),
                    "integration.migrate",
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
