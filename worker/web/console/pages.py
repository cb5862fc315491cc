"""The console's pages as HTML, from what `queries` and the checks' readers return.

Pure functions from views to `Markup`: every value is escaped (`markup.html`), the
only HTML is the fixed text here, forms carry the session's CSRF token, and no
page ever shows a key or a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from models import TeamStatus
from worker.checks.held import BaseUrlGuard, HeldPage, HeldRow
from worker.checks.platform_health import PlatformState
from worker.readiness import MigrationReport
from worker.web.console import queries
from worker.web.console.auth import Visitor
from worker.web.console.chart import changes_chart
from worker.web.console.markup import Markup, escape, html, join, table

NAV = (("fleet", "Fleet"), ("organization", "Organization"), ("platforms", "Platforms"))
STATUSES = [status.value for status in TeamStatus]


def layout(title: str, body: Markup, *, here: str = "", visitor: Visitor | None = None) -> Markup:
    """A whole page: the header (navigation, who is signed in, sign-out) and `body`."""
    nav = Markup("")
    who = Markup("")
    if visitor is not None:
        nav = html(
            "<nav>{links}</nav>",
            links=join(
                html(
                    "<a href='/console/{path}' class='{css}'>{label}</a>",
                    path=path,
                    css="here" if path == here else "",
                    label=label,
                )
                for path, label in NAV
            ),
        )
        who = html(
            "<span class='who'>{name}</span>"
            "<form method='post' action='/console/sign-out'>{csrf}"
            "<button type='submit'>Sign out</button></form>",
            name=visitor.caller.name,
            csrf=csrf_field(visitor),
        )
    return html(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>{title} · ogv console</title>"
        "<link rel='stylesheet' href='/console/console.css'></head>"
        "<body><header class='top'><span class='brand'>opsgenie-validator</span>{nav}{who}"
        "</header><main>{body}</main></body></html>",
        title=title,
        nav=nav,
        who=who,
        body=body,
    )


def csrf_field(visitor: Visitor) -> Markup:
    return html("<input type='hidden' name='csrf' value='{token}'>", token=visitor.csrf)


def status_badge(status: str) -> Markup:
    return html("<span class='status s-{s}'>{s}</span>", s=status)


def when(at: datetime | None) -> Markup:
    return escape(at) if at is not None else html("<span class='muted'>never</span>")


def pager(
    path: str, keep: Mapping[str, str | None], name: str, cursor: str | None, label: str
) -> Markup:
    """A link to the next page (`name=cursor`), keeping the other parameters; nothing
    on the last page."""
    if cursor is None:
        return Markup("")
    shown = {key: value for key, value in keep.items() if value}
    shown[name] = cursor
    return html(
        "<p class='pager'><a href='{href}'>{label}</a></p>",
        href=f"{path}?{urlencode(shown)}",
        label=label,
    )


def message_page(title: str, message: str, visitor: Visitor | None) -> Markup:
    return layout(
        title, html("<h1>{t}</h1><p class='error'>{m}</p>", t=title, m=message), visitor=visitor
    )


# -- sign-in -----------------------------------------------------------------------------


def sign_in(csrf: str, error: str | None = None) -> Markup:
    return layout(
        "Sign in",
        html(
            "<section class='card signin'><h1>Sign in</h1>{error}"
            "<p class='muted'>Paste an API token with the <code>operate</code> scope "
            "(<code>ogv tokens create --scope operate</code>, or OGV_API_TOKEN). The "
            "console keeps a signed session cookie, never the token.</p>"
            "<form method='post' action='/console/sign-in' autocomplete='off'>"
            "<input type='hidden' name='csrf' value='{csrf}'>"
            "<label for='token'>API token</label>"
            "<input type='password' id='token' name='token' required>"
            "<button type='submit'>Sign in</button></form></section>",
            error=html("<p class='error'>{e}</p>", e=error) if error else Markup(""),
            csrf=csrf,
        ),
    )


# -- the fleet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    statuses: dict[str, int]
    platforms: dict[str, dict[str, int]]
    organizations: queries.OrganizationsPage
    days: list[queries.Day]
    changes: queries.ChangesPage
    orgs_cursor: str | None
    changes_cursor: str | None


def _tiles(statuses: Mapping[str, int]) -> Markup:
    tiles = [
        html(
            "<div class='tile total'><span class='n'>{n}</span>"
            "<span class='what'>teams</span></div>",
            n=f"{sum(statuses.values()):,}",
        )
    ]
    tiles += [
        html(
            "<div class='tile s-{s}'><span class='n'>{n}</span><span class='what'>{s}</span></div>",
            s=status,
            n=f"{statuses.get(status, 0):,}",
        )
        for status in STATUSES
    ]
    return html("<div class='tiles'>{t}</div>", t=join(tiles))


def _org_link(organization_id: int) -> Markup:
    return html("<a href='/console/organization?id={id}'>{id}</a>", id=organization_id)


def fleet(view: Fleet, visitor: Visitor) -> Markup:
    platforms = table(
        ["platform", "teams", *STATUSES],
        [
            [platform, f"{sum(counts.values()):,}", *(f"{counts[s]:,}" for s in STATUSES)]
            for platform, counts in view.platforms.items()
        ],
    )
    organizations = table(
        ["organization", "teams", "failing", *STATUSES],
        [
            [
                _org_link(org.organization_id),
                f"{org.teams:,}",
                f"{org.failing:,}",
                *(f"{org.statuses[s]:,}" for s in STATUSES),
            ]
            for org in view.organizations.organizations
        ],
    )
    changes = table(
        ["when", "team", "organization", "change"],
        [
            [
                change.changed_at,
                change.team_id,
                _org_link(change.organization_id),
                html(
                    "<span>{old} → {new}</span>",
                    old=status_badge(change.old_status),
                    new=status_badge(change.new_status),
                ),
            ]
            for change in view.changes.changes
        ],
    )
    body = html(
        "<h1>Fleet</h1>{tiles}"
        "<h2>Status changes per day, last {days} days (UTC)</h2>"
        "<section class='card'>{chart}</section>"
        "<h2>Teams per platform</h2>{platforms}"
        "<h2>Organizations by failing teams</h2>{organizations}{orgs_more}"
        "<h2>Newest status changes</h2>{changes}{changes_more}",
        tiles=_tiles(view.statuses),
        days=len(view.days),
        chart=changes_chart(view.days),
        platforms=platforms if view.platforms else _none("no teams yet"),
        organizations=organizations if view.organizations.organizations else _none("none"),
        orgs_more=pager(
            "/console/fleet",
            {"changes_after": view.changes_cursor},
            "orgs_after",
            view.organizations.next_cursor,
            "More organizations →",
        ),
        changes=changes if view.changes.changes else _none("no status has changed yet"),
        changes_more=pager(
            "/console/fleet",
            {"orgs_after": view.orgs_cursor},
            "changes_after",
            view.changes.next_cursor,
            "Older changes →",
        ),
    )
    return layout("Fleet", body, here="fleet", visitor=visitor)


def _none(text: str) -> Markup:
    return html("<p class='muted'>{t}</p>", t=text)


# -- one organization --------------------------------------------------------------------


@dataclass(frozen=True)
class Organization:
    organization_id: int
    integrations: list[queries.LinkedIntegration]
    teams: queries.TeamsPage
    readiness: MigrationReport
    status: str | None


def search_form(organization_id: int | None, status: str | None = None) -> Markup:
    options = join(
        html(
            "<option value='{v}'{sel}>{label}</option>",
            v=value,
            sel=Markup(" selected") if value == (status or "") else Markup(""),
            label=value or "every status",
        )
        for value in ["", *STATUSES]
    )
    return html(
        "<form class='search' method='get' action='/console/organization'>"
        "<label for='org'>Organization id</label>"
        "<input type='search' id='org' name='id' inputmode='numeric' value='{id}' required>"
        "<select name='status' aria-label='status'>{options}</select>"
        "<button type='submit'>Show</button></form>",
        id=organization_id if organization_id is not None else "",
        options=options,
    )


def _hint_cell(team: queries.ConsoleTeam) -> Markup:
    if team.hint is not None:
        return html(
            "<span class='hint'>{text} <span class='muted'>({code})</span></span>",
            text=team.hint.text,
            code=team.hint.code,
        )
    if team.last_error_code:
        return html("<span class='hint muted'>see error {code}</span>", code=team.last_error_code)
    return html("<span class='muted'>nothing to do</span>")


def _error_cell(team: queries.ConsoleTeam) -> Markup:
    parts = [
        f"HTTP {team.last_http_status}" if team.last_http_status else "",
        team.last_error_code or "",
    ]
    text = ", ".join(part for part in parts if part)
    return escape(text) if text else html("<span class='muted'>none</span>")


def _readiness(report: MigrationReport) -> Markup:
    org = report.organizations[0] if report.organizations else None
    if org is None or not org.teams:
        return _none("no teams on Opsgenie platforms: nothing to move before the sunset")
    summary = html(
        "<dl class='facts'><dt>deadline</dt><dd>{deadline} ({days} days left)</dd>"
        "<dt>teams on Opsgenie</dt><dd>{teams}</dd>"
        "<dt>work on JSM Ops</dt><dd>{works}</dd><dt>fail there</dt><dd>{fails}</dd>"
        "<dt>not known yet</dt><dd>{unknown}</dd><dt>ready</dt><dd>{ready}</dd></dl>",
        deadline=f"{org.deadline:%Y-%m-%d}",
        days=org.days_left,
        teams=org.teams,
        works=org.works,
        fails=org.fails,
        unknown=org.unknown,
        ready=html("<span class='status good'>ready</span>")
        if org.works == org.teams
        else html("<span class='status bad'>not ready</span>"),
    )
    integrations = table(
        [
            "integration",
            "account",
            "platform",
            "teams",
            "works",
            "fails",
            "unknown",
            "deadline",
            "ready",
        ],
        [
            [
                i.integration_id,
                i.account,
                i.platform,
                i.teams,
                i.works,
                i.fails,
                i.unknown,
                f"{i.deadline:%Y-%m-%d} ({i.days_left} days, {i.deadline_reason})",
                "yes" if i.ready else "no",
            ]
            for i in report.integrations
        ],
    )
    return html("{s}<h3>Per integration</h3>{i}", s=summary, i=integrations)


def organization(view: Organization, visitor: Visitor) -> Markup:
    integrations = table(
        ["integration", "account", "platform", "base URL", "link", "teams", *STATUSES],
        [
            [
                i.integration_id,
                i.account,
                i.platform,
                i.base_url,
                i.link_status,
                sum(i.statuses.values()),
                *(i.statuses[s] for s in STATUSES),
            ]
            for i in view.integrations
        ],
    )
    teams = table(
        ["team", "label", "status", "last check", "status since", "last error", "what to do"],
        [
            [
                team.team_id,
                team.label,
                status_badge(team.status),
                when(team.last_checked_at),
                when(team.status_changed_at),
                _error_cell(team),
                _hint_cell(team),
            ]
            for team in view.teams.teams
        ],
        css="teams",
    )
    body = html(
        "<h1>Organization {id}</h1>{search}"
        "<h2>Readiness for the Opsgenie sunset</h2><section class='card'>{readiness}</section>"
        "<h2>Integrations</h2>{integrations}"
        "<h2>Teams{of}</h2>{teams}{more}",
        id=view.organization_id,
        search=search_form(view.organization_id, view.status),
        readiness=_readiness(view.readiness),
        integrations=integrations,
        of=f" ({view.status})" if view.status else "",
        teams=teams if view.teams.teams else _none("no teams"),
        more=pager(
            "/console/organization",
            {"id": str(view.organization_id), "status": view.status},
            "teams_after",
            view.teams.next_cursor,
            "More teams →",
        ),
    )
    return layout(
        f"Organization {view.organization_id}", body, here="organization", visitor=visitor
    )


def organization_search(visitor: Visitor, error: str | None = None) -> Markup:
    body = html(
        "<h1>Organization</h1>{error}<section class='card'>{search}</section>",
        error=html("<p class='error'>{e}</p>", e=error) if error else Markup(""),
        search=search_form(None),
    )
    return layout("Organization", body, here="organization", visitor=visitor)


# -- platforms and the guard -------------------------------------------------------------


@dataclass(frozen=True)
class Platforms:
    health: list[PlatformState]
    guards: list[BaseUrlGuard]
    held: HeldPage
    where: str
    notice: str | None


def _share(state: PlatformState) -> str:
    if not state.answers:
        return "no answers yet"
    return f"{100 * state.unrecognised / state.answers:.0f}% of {state.answers}"


def _decision(visitor: Visitor, field: str, value: str, noun: str) -> Markup:
    """The release and discard buttons for the held changes `field=value` names."""
    return html(
        "<div class='actions'>"
        "<form class='inline' method='post' action='/console/changes/release'>{csrf}"
        "<input type='hidden' name='{field}' value='{value}'>"
        "<button type='submit' class='secondary' aria-label='release {noun}'>Release</button>"
        "</form>"
        "<form class='inline' method='post' action='/console/changes/discard'>{csrf}"
        "<input type='hidden' name='{field}' value='{value}'>"
        "<button type='submit' class='danger' aria-label='discard {noun}'>Discard</button></form>"
        "</div>",
        csrf=csrf_field(visitor),
        field=field,
        value=value,
        noun=noun,
    )


def _evidence(row: HeldRow) -> str:
    parts = [
        f"HTTP {row.http_status}" if row.http_status else "",
        row.error_code or "",
        row.message or "",
    ]
    return ", ".join(part for part in parts if part)


def platforms(view: Platforms, visitor: Visitor) -> Markup:
    health = table(
        ["base URL", "platform", "state", "unrecognised answers", "window since"],
        [
            [
                s.base_url,
                s.platform,
                html("<span class='status bad'>unavailable since {t}</span>", t=s.unavailable_since)
                if s.unavailable
                else html("<span class='status good'>answering</span>"),
                _share(s),
                s.window_started_at,
            ]
            for s in view.health
        ],
    )
    guards = table(
        ["base URL", "guard", "window", "held", ""],
        [
            [
                g.base_url,
                html(
                    "<span class='status bad'>tripped{since}</span>",
                    since=f" since {g.tripped_at:%Y-%m-%d %H:%M} UTC" if g.tripped_at else "",
                )
                if g.tripped
                else html("<span class='status good'>ok</span>"),
                f"{g.changes} changes of {g.checks} checks, {g.organizations} organizations",
                g.held,
                _decision(visitor, "base_url", g.base_url, f"every change held for {g.base_url}")
                if g.held
                else Markup(""),
            ]
            for g in view.guards
        ],
    )
    held = table(
        ["team", "organization", "account", "base URL", "change", "held at", "evidence", ""],
        [
            [
                row.team_id,
                _org_link(row.organization_id),
                row.account,
                row.base_url,
                html(
                    "<span>{old} → {new}</span>",
                    old=status_badge(row.old_status),
                    new=status_badge(row.new_status),
                ),
                row.held_at,
                _evidence(row),
                _decision(visitor, "team", row.team_id, f"the change held for {row.team_id}"),
            ]
            for row in view.held.held
        ],
        css="held",
    )
    body = html(
        "<h1>Platforms</h1>{notice}"
        "<h2>Base URLs</h2>{health}"
        "<h2>Mass-change guard <span class='muted'>(windows in {where})</span></h2>{guards}"
        "<h2>Held changes</h2>{held}{more}",
        notice=html("<p class='notice'>{n}</p>", n=view.notice) if view.notice else Markup(""),
        health=health if view.health else _none("no base URL has answered yet"),
        where=view.where,
        guards=guards if view.guards else _none("the guard has counted nothing yet"),
        held=held if view.held.held else _none("no changes are held"),
        more=pager(
            "/console/platforms", {}, "held_after", view.held.next_cursor, "More held changes →"
        ),
    )
    return layout("Platforms", body, here="platforms", visitor=visitor)


__all__ = [
    "Fleet",
    "Organization",
    "Platforms",
    "fleet",
    "layout",
    "message_page",
    "organization",
    "organization_search",
    "platforms",
    "sign_in",
]
