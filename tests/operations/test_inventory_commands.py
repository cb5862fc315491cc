"""`ogv integration` and `ogv team` commands that manage what is checked, in-process on
the embedded default: their JSON, their one-line refusals, and keys never printed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from models import RequestState, ValidationRequest
from models.db import session_factory
from worker import audit
from worker.operations.cli import app
from worker.settings import OFFICIAL_BASE_URLS, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie

runner = CliRunner()


@pytest.fixture
def cli_env(ogv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fake: FakeOpsgenie) -> None:
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", ",".join([*OFFICIAL_BASE_URLS, fake.url]))
    get_settings.cache_clear()
    assert runner.invoke(app, ["db", "upgrade", "--json"]).exit_code == 0


def ogv(*args: str, stdin: str | None = None) -> tuple[int, Any, str]:
    result = runner.invoke(app, [*args, "--json"], input=stdin)
    out = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, out, result.stdout + result.stderr


def install(org: int) -> int:
    code, out, _ = ogv("integration", "add", "--org", str(org), "--account", "acme")
    assert code == 0, out
    return int(out["integration_id"])


def add(org: int, integration: int, label: str, key: str) -> str:
    code, out, _ = ogv(
        "team", "add", "--org", str(org), "--integration", str(integration), "--label", label,
        stdin=key + "\n",
    )  # fmt: skip
    assert code == 0, out
    return str(out["team_id"])


def new_org() -> int:
    return uuid.uuid4().int % 10**12 + 1


def checks_of(team_id: str) -> list[ValidationRequest]:
    with session_factory(get_settings().effective_database_url)() as session:
        rows = session.scalars(
            select(ValidationRequest)
            .where(ValidationRequest.team_id == team_id)
            .order_by(ValidationRequest.created_at)
        ).all()
        session.expunge_all()
        return list(rows)


def test_integrations_are_listed_disabled_enabled_and_removed(cli_env: None) -> None:
    first, second = install(51), install(51)
    add(51, first, "ops", "k-1")

    code, page, _ = ogv("integration", "list", "--org", "51")
    assert code == 0
    assert [(i["integration_id"], i["teams"], i["status"]) for i in page["integrations"]] == [
        (first, 1, "active")
    ] and second == first  # the same account: installed once

    assert (
        ogv("integration", "disable", "--org", "51", "--integration", str(first))[1]["status"]
        == "disabled"
    )
    code, shown, _ = ogv("integration", "show", "--org", "51", "--integration", str(first))
    assert (code, shown["status"]) == (0, "disabled")
    assert (
        ogv("integration", "enable", "--org", "51", "--integration", str(first))[1]["status"]
        == "active"
    )

    code, removed, _ = ogv("integration", "remove", "--org", "51", "--integration", str(first))
    assert (code, removed) == (0, {"organization_id": 51, "integration_id": first, "teams": 1})
    code, missing, _ = ogv("integration", "show", "--org", "51", "--integration", str(first))
    assert (code, missing["error"]["code"]) == (1, "not_found")


def test_teams_are_listed_shown_rekeyed_and_removed(cli_env: None) -> None:
    integration = install(52)
    team_id = add(52, integration, "payments", "first-key")
    add(52, integration, "ops", "other-key")

    code, page, _ = ogv(
        "team", "list", "--org", "52", "--integration", str(integration), "--limit", "1"
    )
    assert code == 0 and [t["label"] for t in page["teams"]] == ["ops"]
    code, rest, _ = ogv("team", "list", "--org", "52", "--cursor", page["next_cursor"])
    assert [t["team_id"] for t in rest["teams"]] == [team_id] and rest["next_cursor"] is None

    code, saved, text = ogv("team", "replace-key", "--team", team_id, stdin="second-key\n")
    assert code == 0, text
    assert saved["team"]["status"] == "unknown" and saved["validation"]["state"] == "pending"
    assert "second-key" not in text and "first-key" not in text
    assert [r.state for r in checks_of(team_id)] == [RequestState.PENDING]
    # No worker runs here: a wait runs out, and says so as `ogv validate --wait` does.
    code, waited, _ = ogv("team", "replace-key", "--team", team_id, "--wait", "0.2", stdin="k3\n")
    assert code == 2 and waited["validation"]["state"] in ("pending", "running")
    assert waited["team"]["key_version"] == 3

    code, shown, _ = ogv("team", "show", "--team", team_id)
    assert (code, shown["team_id"], shown["label"]) == (0, team_id, "payments")
    code, removed, _ = ogv("team", "remove", "--team", team_id)
    assert (code, removed["team_id"]) == (0, team_id)
    assert ogv("team", "show", "--team", team_id)[1]["error"]["code"] == "not_found"
    assert ogv("team", "remove", "--team", "payments")[1]["error"]["code"] == "invalid"


def test_import_with_validate_asks_for_a_check_of_each_imported_team(
    cli_env: None, tmp_path: Path
) -> None:
    integration = install(53)
    lines = [
        {"organization_id": 53, "integration_id": integration, "label": f"t{n}"}
        | {"integration_key": f"key-{n}"}
        for n in range(3)
    ]
    source = tmp_path / "teams.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))

    code, report, text = ogv("team", "import", str(source), "--validate")

    assert code == 0, text
    assert (report["imported"], report["checks"], len(report["batches"])) == (3, 3, 1)
    for n in range(3):
        (check,) = checks_of(f"{_link_id_of(53, integration)}-t{n}")
        assert check.state is RequestState.PENDING and str(check.batch_id) == report["batches"][0]
    assert "key-0" not in text


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(max_size=60))
def test_replace_key_takes_only_a_well_formed_key_and_never_prints_it(
    cli_env: None, key: str
) -> None:
    integration = install(54)
    team_id = f"{_link_id_of(54, integration)}-fuzz"
    if ogv("team", "show", "--team", team_id)[0] != 0:
        add(54, integration, "fuzz", "first-key")
    sent = key.replace("\n", "").replace("\r", "")
    code, out, text = ogv("team", "replace-key", "--team", team_id, stdin=sent + "\n")
    well_formed = 1 <= len(sent.strip()) <= 200 and all("\x21" <= c <= "\x7e" for c in sent.strip())
    assert code == (0 if well_formed else 1), text
    if len(sent.strip()) >= 6:
        assert sent.strip() not in text
    if not well_formed:
        assert out["error"]["code"] == "invalid"


def _link_id_of(org: int, integration: int) -> int:
    shown = ogv("integration", "show", "--org", str(org), "--integration", str(integration))[1]
    return int(shown["organization_integration_id"])


def test_the_commands_writes_are_audited_as_the_operator(cli_env: None) -> None:
    org = new_org()
    integration = install(org)
    team_id = add(org, integration, "ops", "first-key")
    flag = ["--org", str(org), "--integration", str(integration)]
    for args in (
        ["integration", "disable", *flag],
        ["integration", "enable", *flag],
        ["team", "replace-key", "--team", team_id],
        ["team", "remove", "--team", team_id],
        ["integration", "remove", *flag],
    ):
        code, _, text = ogv(*args, stdin="second-key\n")
        assert code == 0, text

    code, page, text = ogv("audit", "list", "--org", str(org))
    target = f"integration:{integration}"
    assert code == 0, text
    assert [(e["actor"], e["action"], e["target"]) for e in reversed(page["events"])] == [
        (audit.cli_actor(), action, where)
        for action, where in [
            ("integration.add", target),
            ("team.add", team_id),
            ("integration.disable", target),
            ("integration.enable", target),
            ("team.replace_key", team_id),
            ("team.remove", team_id),
            ("integration.remove", target),
        ]
    ]
    assert "second-key" not in text and "first-key" not in text
