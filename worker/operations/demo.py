"""`ogv demo`: the whole pipeline once, on whatever database and broker are configured.

It starts the built-in fake Opsgenie and a real worker process, installs one
account with a team per outcome of SPEC §5 (plus the two that never reach
Opsgenie), validates them all, and reports what each request ended as.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from models import Requester
from models.crypto import KeyVault
from models.db import session_factory
from models.migrate import upgrade
from worker import inventory
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker
from worker.testing.scenario import KeyScenario, Scenario

# label → (what the fake answers for that team's key, the outcome we expect)
CASES: dict[str, tuple[KeyScenario, str]] = {
    "payments": (KeyScenario("valid"), "valid"),
    "revoked": (KeyScenario("invalid_key"), "invalid_key"),
    "api-created": (KeyScenario("no_access"), "key_lacks_access"),
    "unprocessable": (KeyScenario("unprocessable"), "rejected"),
    "throttled-once": (KeyScenario("throttle", times=1), "valid"),
    "flaky": (KeyScenario("server_error", times=2), "valid"),
    "down": (KeyScenario("server_error", times=-1), "error"),
}
DEMO_ENV = {
    # Short waits so the demo's retries finish in seconds, not minutes.
    "OGV_BACKOFF_BASE": "0.2",
    "OGV_BACKOFF_CAP": "1",
    "OGV_MAX_ATTEMPTS": "3",
}


@dataclass(frozen=True)
class DemoRow:
    label: str
    expected: str
    outcome: str | None
    attempts: int
    message: str | None


@dataclass(frozen=True)
class DemoReport:
    organization_id: int
    rows: list[DemoRow]

    @property
    def ok(self) -> bool:
        return all(row.outcome == row.expected for row in self.rows)

    def table(self) -> Table:
        table = Table(title=f"ogv demo (organization {self.organization_id})")
        for column in ("team", "expected", "outcome", "attempts"):
            table.add_column(column, no_wrap=True)
        # The messages are long; `--json` has them, the table keeps to what fits.
        for row in self.rows:
            mark = "green" if row.outcome == row.expected else "red"
            table.add_row(
                row.label,
                row.expected,
                f"[{mark}]{row.outcome}[/{mark}]",
                str(row.attempts),
            )
        return table


def run_demo(timeout: float = 60.0) -> DemoReport:
    keys = {label: f"demo-{uuid.uuid4()}" for label in CASES}
    scenario = Scenario(keys={keys[label]: case for label, (case, _) in CASES.items()})
    with FakeOpsgenie(scenario) as fake:
        settings = _configure_for(fake.url)
        upgrade(settings.effective_database_url)
        organization_id = secrets.randbelow(10**9) + 1
        team_ids, integration_id = _install(organization_id, fake.url, keys)
        log_path = Path(tempfile.gettempdir()) / f"ogv-demo-worker-{os.getpid()}.log"
        with LocalWorker(dict(os.environ), log_path):
            rows = _validate_all(organization_id, integration_id, team_ids, timeout)
    return DemoReport(organization_id, rows)


def _configure_for(fake_url: str) -> Settings:
    """Allow the fake's URL and shorten waits, for this process and the worker."""
    current = os.environ.get("OGV_ALLOWED_BASE_URLS")
    allowed = [current] if current else list(get_settings().allowed_base_urls)
    os.environ["OGV_ALLOWED_BASE_URLS"] = ",".join([*allowed, fake_url])
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    return get_settings()


def _install(
    organization_id: int, base_url: str, keys: dict[str, str]
) -> tuple[dict[str, str], int]:
    settings = get_settings()
    vault = KeyVault(settings.fernet_keys())
    with session_factory().begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=organization_id,
            account_name="demo",
            base_url=base_url,
            allowed_base_urls=settings.allowed_base_urls,
        )
        team_ids = {
            label: inventory.add_team(
                session,
                organization_id=organization_id,
                integration_id=integration.id,
                label=label,
                integration_key=key,
                vault=vault,
            ).id
            for label, key in keys.items()
        }
        return team_ids, integration.id


def _validate_all(
    organization_id: int, integration_id: int, team_ids: dict[str, str], timeout: float
) -> list[DemoRow]:
    from worker.celery import app
    from worker.web.enqueue import request_validation, wait_for

    sessions = session_factory()
    wanted = [
        (label, organization_id, integration_id, team_id, CASES[label][1])
        for label, team_id in team_ids.items()
    ]
    wanted += [
        ("(no such team)", organization_id, integration_id, "0-nobody", "invalid_team"),
        ("(no such integration)", organization_id, 0, "0-nobody", "invalid_integration"),
    ]
    requested = [
        (
            label,
            expected,
            request_validation(
                sessions,
                app,
                organization_id=org,
                integration_id=integration,
                team_id=team,
                requested_by=Requester.CLI,
            ).request_id,
        )
        for label, org, integration, team, expected in wanted
    ]
    rows = []
    for label, expected, request_id in requested:
        view = wait_for(sessions, request_id, timeout)
        rows.append(
            DemoRow(
                label,
                expected,
                view.outcome if view else None,
                view.attempts if view else 0,
                view.message if view else None,
            )
        )
    return rows


__all__ = ["DemoReport", "DemoRow", "dataclasses", "run_demo"]
