"""`ogv tokens`: the API's named, scoped tokens (worker/access.py). A token is printed
once, when it is made; only its hash is kept."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.operations.cli.output import JsonOption, console, emit, fail

app = typer.Typer(no_args_is_help=True, help="The API's scoped tokens.")

SCOPES_HELP = (
    "read (GET routes), validate (POST /v1/validations, and read), operate (guard, held "
    "changes, audit), manage (integration and team writes); repeatable."
)


@app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="The caller's name, e.g. billing-app.")],
    scope: Annotated[list[str], typer.Option("--scope", help=SCOPES_HELP)],
    org: Annotated[
        list[int] | None,
        typer.Option("--org", help="Only this organization (repeatable; default: every one)."),
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(help="Refused after this many days (default: never).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a token and print it, once: store it in the caller's secret store now."""
    from models.db import session_factory
    from worker import access, audit

    try:
        with session_factory().begin() as session:
            issued = access.create_token(
                session,
                name,
                scope,
                organizations=org or (),
                expires_in_days=expires_in_days,
                actor=audit.cli_actor(),
            )
    except access.TokenRefused as exc:
        fail(exc.code, str(exc), as_json)
    view = issued.view

    def show() -> None:
        sys.stdout.write(issued.token + "\n")
        Console(stderr=True, soft_wrap=True).print(
            f"token {view.name}: {', '.join(view.scopes)} for {_organizations(view)}; "
            "shown once, only its hash is kept",
            highlight=False,
        )

    emit({"token": issued.token, **_as_dict(view)}, as_json, show)


@app.command("list")
def tokens_list(as_json: JsonOption = False) -> None:
    """Every token with its scopes, organizations and dates; never the token itself."""
    from models.db import session_factory
    from worker import access

    with session_factory()() as session:
        views = access.list_tokens(session)
    emit(views, as_json, lambda: console.print(_table(views)))


@app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name (`ogv tokens list`).")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a token; running APIs refuse it within seconds."""
    from models.db import session_factory
    from worker import access, audit

    try:
        with session_factory().begin() as session:
            view = access.revoke_token(session, name, actor=audit.cli_actor())
    except access.TokenRefused as exc:
        fail(exc.code, str(exc), as_json)
    emit(_as_dict(view), as_json, lambda: console.print(f"revoked {view.name}", highlight=False))


def _as_dict(view: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(view)


def _organizations(view: Any) -> str:
    orgs = view.organizations
    return "every organization" if orgs is None else "organizations " + ", ".join(map(str, orgs))


def _table(views: Sequence[Any]) -> Table:
    table = Table("name", "scopes", "organizations", "created", "expires", "last used", "revoked")
    for column in table.columns:
        column.overflow = "fold"

    def day(value: Any) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"

    for view in views:
        orgs = "all" if view.organizations is None else ", ".join(map(str, view.organizations))
        table.add_row(
            view.name,
            ", ".join(view.scopes),
            orgs,
            day(view.created_at),
            day(view.expires_at),
            day(view.last_used_at),
            day(view.revoked_at),
        )
    return table
