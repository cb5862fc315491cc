"""`ogv demo`: the whole pipeline once, on whatever database and broker are configured.

It starts the built-in fake Opsgenie and a real worker process, installs one
account with a team per outcome of SPEC §5 (plus the two that never reach
Opsgenie), validates them all, and reports what each request ended as.

The fake stands for every platform (Opsgenie US and EU, JSM Operations), so the
demo also shows the sunset: a team on JSM Ops, keys that belong elsewhere
(`works_on`), a malformed key, answers from a captive portal or a retired host
that are never taken as a verdict, and an account switched off before the end of
support, whose 401 is the platform's, not the key's. 429s come in every header
form the service honours. Each row shows its hint: what to do, and where.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.table import Table

from models import Requester
from models.crypto import KeyVault
from models.migrate import upgrade
from worker import inventory
from worker.database import session_factory
from worker.enqueue import RequestView
from worker.platforms import PLATFORMS, PlatformName, get_platform, sunset
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker
from worker.testing.scenario import KeyScenario, RateLimitHeaders, Scenario


@dataclass(frozen=True)
class Case:
    """One demo team: what the fake answers for its key, and what the check should say."""

    answers: KeyScenario
    outcome: str
    note: str = ""
    """The error code, or where else the key works, that the outcome should come with."""
    platform: PlatformName = "opsgenie"
    hint: str = ""
    """The hint code the outcome should come with (`worker.platforms.hints`)."""
    switched_off: bool = False
    """On an account whose Opsgenie was switched off yesterday (its deadline has passed)."""


def _throttled(form: RateLimitHeaders) -> Case:
    """A key throttled once, its 429 naming the wait in `form`, then valid."""
    return Case(KeyScenario("throttle", times=1, rate_limit_headers=form), "valid")


CASES: dict[str, Case] = {
    "payments": Case(KeyScenario("valid"), "valid"),
    "revoked": Case(KeyScenario("invalid_key"), "invalid_key", hint="key_disabled_or_deleted"),
    "api-created": Case(
        KeyScenario("no_access"), "key_lacks_access", "opsgenie_40301", hint="wrong_key_type"
    ),
    "unprocessable": Case(KeyScenario("unprocessable"), "rejected", hint="rejected"),
    "throttled-once": _throttled("opsgenie"),
    "flaky": Case(KeyScenario("server_error", times=2), "valid"),
    "down": Case(
        KeyScenario("server_error", times=-1), "error", "server_error", hint="platform_unreachable"
    ),
    # 429s in each header form (README, "What a check does").
    "429-retry-after": _throttled("retry_after"),
    "429-retry-after-date": _throttled("retry_after_date"),
    "429-ratelimit": _throttled("ratelimit"),
    "429-ratelimit-policy": _throttled("ratelimit_policy"),
    "429-ratelimit-reset": _throttled("ratelimit_reset"),
    "429-remaining-0": _throttled("x_ratelimit_remaining"),
    "429-no-header": _throttled("none"),
    # The Opsgenie sunset (README, "The Opsgenie sunset").
    "on-jsm-ops": Case(KeyScenario("valid"), "valid", platform="jsm-ops"),
    "saved-as-us": Case(
        KeyScenario("eu_only"), "invalid_key", "works on opsgenie-eu", hint="wrong_region"
    ),
    "moved-to-jsm": Case(
        KeyScenario("jsm_only"), "invalid_key", "works on jsm-ops", hint="migrated_account"
    ),
    "mistyped": Case(
        KeyScenario("malformed_key"), "invalid_key", "malformed_key", "opsgenie", "malformed_key"
    ),
    "captive-portal": Case(
        KeyScenario("captive_portal"), "error", "unrecognised_answer", hint="not_the_platform"
    ),
    "retired-host": Case(
        KeyScenario("retired"), "error", "unrecognised_answer", hint="not_the_platform"
    ),
    "switched-off": Case(
        KeyScenario("switched_off"),
        "invalid_key",
        "works on jsm-ops",
        hint="platform_retired",
        switched_off=True,
    ),
}
DEMO_ENV = {
    # Short waits so the demo's retries finish in seconds, not minutes.
    "OGV_BACKOFF_BASE": "0.2",
    "OGV_BACKOFF_CAP": "1",
    "OGV_MAX_ATTEMPTS": "3",
    "OGV_LOCATE_KEYS": "on",
}


@dataclass(frozen=True)
class DemoRow:
    label: str
    expected: str
    outcome: str | None
    attempts: int
    message: str | None
    platform: str = "opsgenie"
    expected_note: str = ""
    note: str = ""
    """What came with the outcome: its error code, or where else the key works."""
    expected_hint: str = ""
    hint: str = ""
    """The hint's code ("" without one)."""
    hint_text: str = ""

    @property
    def ok(self) -> bool:
        return (self.outcome, self.note, self.hint) == (
            self.expected,
            self.expected_note,
            self.expected_hint,
        )


NONE = KeyScenario()  # the teams that never reach the fake


@dataclass(frozen=True)
class DemoReport:
    organization_id: int
    rows: list[DemoRow]

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def table(self, width: int = 120) -> Table:
        """The rows as a table for a terminal `width` columns wide: below 100 the
        note gives way (`--json` has it, and the messages and hints' sentences)."""
        table = Table(title=f"ogv demo (organization {self.organization_id})")
        with_note = width >= 100
        table.add_column("team", overflow="fold")
        table.add_column("platform", no_wrap=True, min_width=8)
        table.add_column("outcome", no_wrap=True, min_width=19)  # invalid_integration
        if with_note:
            table.add_column("note", no_wrap=True, overflow="ellipsis")
        table.add_column("hint", overflow="fold")
        table.add_column("tries", no_wrap=True, min_width=5, justify="right")
        for row in self.rows:
            mark = "green" if row.ok else "red"
            cells = [row.label, row.platform, f"[{mark}]{row.outcome}[/{mark}]"]
            cells += [row.note] if with_note else []
            table.add_row(*cells, row.hint, str(row.attempts))
        return table


def run_demo(timeout: float = 60.0) -> DemoReport:
    keys = {label: f"demo-{uuid.uuid4()}" for label in CASES}
    scenario = Scenario(keys={keys[label]: case.answers for label, case in CASES.items()})
    with FakeOpsgenie(scenario) as fake:
        settings = _configure_for(fake)
        upgrade(settings.effective_database_url)
        organization_id = secrets.randbelow(10**9) + 1
        teams = _install(organization_id, keys)
        log_path = Path(tempfile.gettempdir()) / f"ogv-demo-worker-{os.getpid()}.log"
        with LocalWorker(dict(os.environ), log_path):
            rows = _validate_all(organization_id, teams, timeout)
    return DemoReport(organization_id, rows)


def _configure_for(fake: FakeOpsgenie) -> Settings:
    """Point every platform at the fake, allow it, and shorten waits, for this process
    and the worker."""
    current = os.environ.get("OGV_ALLOWED_BASE_URLS")
    allowed = [current] if current else list(get_settings().allowed_base_urls)
    urls = fake.base_urls()
    os.environ["OGV_ALLOWED_BASE_URLS"] = ",".join([*allowed, *urls.values()])
    for platform in PLATFORMS.values():
        os.environ[platform.base_url_setting] = urls[platform.name]
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    return get_settings()


def _account(case: Case) -> tuple[PlatformName, bool]:
    return case.platform, case.switched_off


def _install(organization_id: int, keys: dict[str, str]) -> dict[str, tuple[int, str]]:
    """One integration per platform the cases use, and one switched off yesterday;
    returns each label's (integration, team)."""
    settings = get_settings()
    vault = KeyVault(settings.fernet_keys())
    with session_factory().begin() as session:
        integrations = {}
        for name, off in dict.fromkeys(_account(case) for case in CASES.values()):
            integration = inventory.add_integration(
                session,
                organization_id=organization_id,
                account_name="demo-switched-off" if off else "demo",
                base_url=settings.platform_base_url(get_platform(name)),
                allowed_base_urls=settings.allowed_base_urls,
                platform=get_platform(name),
            )[0]
            if off:
                yesterday = sunset.today() - timedelta(days=1)
                inventory.update_dates(
                    session, integration.id, migrated_on=yesterday, switched_off_on=yesterday
                )
            integrations[name, off] = integration.id
        return {
            label: (
                integrations[_account(CASES[label])],
                inventory.add_team(
                    session,
                    organization_id=organization_id,
                    integration_id=integrations[_account(CASES[label])],
                    label=label,
                    integration_key=key,
                    vault=vault,
                ).id,
            )
            for label, key in keys.items()
        }


def _validate_all(
    organization_id: int, teams: dict[str, tuple[int, str]], timeout: float
) -> list[DemoRow]:
    from worker.celery import app
    from worker.enqueue import request_validation, wait_for

    sessions = session_factory()
    wanted = [
        (label, organization_id, integration_id, team_id, CASES[label])
        for label, (integration_id, team_id) in teams.items()
    ]
    any_integration = next(iter(teams.values()))[0]
    wanted += [
        (
            "(no such team)",
            organization_id,
            any_integration,
            "0-nobody",
            Case(NONE, "invalid_team", hint="team_missing"),
        ),
        (
            "(no such integration)",
            organization_id,
            0,
            "0-nobody",
            Case(NONE, "invalid_integration", hint="integration_missing"),
        ),
    ]
    requested = [
        (
            label,
            case,
            request_validation(
                sessions,
                app,
                organization_id=org,
                integration_id=integration,
                team_id=team,
                requested_by=Requester.CLI,
            ).request_id,
        )
        for label, org, integration, team, case in wanted
    ]
    rows = []
    for label, case, request_id in requested:
        view = wait_for(sessions, request_id, timeout)
        rows.append(
            DemoRow(
                label,
                case.outcome,
                view.outcome if view else None,
                view.attempts if view else 0,
                view.message if view else None,
                case.platform,
                case.note,
                _note(view) if view else "",
                _expected_hint(case),
                view.hint.code if view and view.hint else "",
                view.hint.text if view and view.hint else "",
            )
        )
    return rows


def _expected_hint(case: Case) -> str:
    """The case's hint; a valid key on Opsgenie is told to move once its deadline is near."""
    near = sunset.deadline().days_left() <= sunset.WARN_DAYS
    if case.outcome == "valid" and case.platform != "jsm-ops" and near:
        return "deadline_close"
    return case.hint


def _note(view: RequestView) -> str:
    if view.works_on:
        return f"works on {', '.join(view.works_on)}"
    return view.error_code or ""


__all__ = ["DemoReport", "DemoRow", "dataclasses", "run_demo"]
