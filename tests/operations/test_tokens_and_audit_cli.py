"""`ogv tokens`, `ogv audit` and the audit trail of operators' commands, through the real
`ogv` on the embedded default; and bad input to any option, in one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.stacks import ogv_command
from worker import audit


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    found = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    found.update(OGV_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    assert run(found, "db", "upgrade").returncode == 0
    return found


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ogv_command(), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_json(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    done = run(env, *args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_a_token_is_shown_once_listed_without_its_secret_and_revoked(
    env: dict[str, str], tmp_path: Path
) -> None:
    made = run(env, "tokens", "create", "billing-app", "--scope", "validate", "--org", "7")
    token = made.stdout.strip()
    listed = run_json(env, "tokens", "list")
    revoked = run_json(env, "tokens", "revoke", "billing-app")
    again = run(env, "tokens", "revoke", "billing-app", "--json")
    text = run(env, "tokens", "list").stdout

    assert made.returncode == 0 and token.startswith("ogv_") and "\n" not in token
    assert "billing-app: validate for organizations 7; shown once" in made.stderr
    assert [(t["name"], t["scopes"], t["organizations"]) for t in listed] == [
        ("billing-app", ["validate"], [7])
    ]
    assert set(listed[0]) == {
        "name", "scopes", "organizations", "created_at", "created_by", "expires_at",
        "last_used_at", "revoked_at",
    }  # fmt: skip
    assert revoked["revoked_at"] is not None
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["code"] == "already_revoked"
    assert "billing-app" in text and token not in text
    database = (tmp_path / "data" / "ogv.sqlite3").read_bytes()
    assert token.encode() not in database
    assert hashlib.sha256(token.encode()).hexdigest().encode() in database


def test_token_create_refuses_in_one_line(env: dict[str, str]) -> None:
    bad_scope = run(env, "tokens", "create", "app", "--scope", "root", "--json")
    bad_name = run(env, "tokens", "create", "Not A Name", "--scope", "read")
    not_utf8 = run(env, "tokens", "revoke", "\udcff")  # the byte 0xff on the command line

    assert (not_utf8.returncode, not_utf8.stdout) == (1, "")
    assert [line for line in not_utf8.stderr.splitlines() if line] == [
        not_utf8.stderr.strip()
    ] and "invalid_name" in not_utf8.stderr
    assert bad_scope.returncode == 1
    assert json.loads(bad_scope.stdout)["error"]["code"] == "invalid_scope"
    assert bad_name.returncode == 1 and len(bad_name.stderr.strip().splitlines()) == 1
    assert "invalid_name" in bad_name.stderr


def test_operators_actions_are_audited_and_read_newest_first(env: dict[str, str]) -> None:
    added = run_json(env, "integration", "add", "--org", "7", "--account", "acme")
    integration = str(added["integration_id"])
    team = run_json(
        env, "team", "add", "--org", "7", "--integration", integration, "--label", "ops",
        stdin="a-key-that-is-long-enough-0123456789\n",
    )  # fmt: skip
    line = {"organization_id": 7, "integration_id": added["integration_id"], "label": "db"}
    imported = run_json(
        env, "team", "import", "-",
        stdin=json.dumps({**line, "integration_key": "another-key-long-enough-0123456789"}),
    )  # fmt: skip
    run_json(env, "keys", "rotate", "--force")  # the embedded broker cannot be asked
    run_json(env, "tokens", "create", "ci", "--scope", "read")
    run_json(env, "integration", "update", integration, "--migrated-on", "2026-11-01")

    page = run_json(env, "audit", "list")
    mine = run_json(env, "audit", "list", "--org", "7", "--action", "team.add", "--since", "1h")
    first = run_json(env, "audit", "list", "--limit", "2")
    rest = run_json(env, "audit", "list", "--limit", "2", "--cursor", first["next_cursor"])

    assert [e["action"] for e in page["events"]] == [
        "integration.update", "token.create", "keys.rotate", "team.import", "team.add",
        "integration.add",
    ]  # fmt: skip
    assert {e["actor"] for e in page["events"]} == {audit.cli_actor()}
    assert [(e["organization_id"], e["target"]) for e in mine["events"]] == [(7, team["team_id"])]
    update, imports = page["events"][0], page["events"][3]
    assert (update["organization_id"], update["target"]) == (7, f"integration:{integration}")
    assert update["details"] == {"migrated_on": "2026-11-01"}
    assert (imports["organization_id"], imports["target"]) == (7, "organization:7")
    assert imports["details"] == {"imported": 1, "lines": 1, "refused": 0}
    assert imported["imported"] == 1
    assert [e["action"] for e in first["events"] + rest["events"]] == [
        e["action"] for e in page["events"][:4]
    ]
    assert "key" not in json.dumps(page).replace("keys.rotate", "")


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--org", "9223372036854775808"],
        ["status", "--org", "-9223372036854775809"],
        ["validate", "--org", "1", "--integration", "9" * 40, "--team", "1-a"],
        ["tokens", "create", "app", "--scope", "read", "--org", "1", "--org", str(2**64)],
        ["audit", "list", "--limit", "99999999999999999999"],
        ["status", "--org", "seven"],
        ["status", "--no-such-option"],
        ["validate", "--org", "-1", "--integration", "4", "--team", "4-t1"],
        ["validate", "--org", "1", "--integration", "0", "--team", "1-t1"],
        ["validate", "--org", "1", "--integration", "4", "--team", "4-t1", "--wait", "-5"],
        ["validate", "--org", "1", "--integration", "4", "--team", "4-t1", "--wait", "nan"],
        ["audit", "list", "--org", "0"],
        ["revalidate", "--all", "--window", "inf"],
    ],
)
def test_an_integer_past_64_bits_or_any_usage_error_is_one_line(
    env: dict[str, str], args: list[str]
) -> None:
    as_json = run(env, *args, "--json")
    plain = run(env, *args)

    assert as_json.returncode == plain.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "invalid_usage" and as_json.stdout.count("\n") == 1
    assert plain.stderr.startswith("error (invalid_usage): ") and plain.stderr.count("\n") == 1
    assert "Traceback" not in as_json.stderr + plain.stderr


def test_a_rotation_resumes_only_after_a_team_id(env: dict[str, str]) -> None:
    pasted = run(env, "keys", "rotate", "--after", "SECRETKEY-abcdef123456", "--json")

    assert pasted.returncode == 1 and json.loads(pasted.stdout)["error"]["code"] == "invalid"
    assert "SECRETKEY" not in pasted.stdout + pasted.stderr


def test_audit_list_refuses_a_bad_filter_in_one_line(env: dict[str, str]) -> None:
    for args in (["--since", "last tuesday"], ["--action", "team.dance"], ["--cursor", "x"]):
        done = run(env, "audit", "list", *args, "--json")
        assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "invalid"


def test_an_import_caps_its_list_of_refused_lines_and_skips_an_endless_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "teams.jsonl"
    with source.open("wb") as handle:
        handle.write(b'{"organization_id": ' + b"9" * (2 * 1024 * 1024) + b"}\n")  # 2 MB
        for _ in range(149):
            handle.write(b"not json\n")
    as_json = run(env, "team", "import", str(source), "--json")
    plain = run(env, "team", "import", str(source))

    report = json.loads(as_json.stdout)
    assert as_json.returncode == plain.returncode == 1
    assert (report["refused"], len(report["errors"]), report["written"]) == (150, 100, False)
    assert report["errors"][0] == {
        "line": 1, "code": "malformed_line", "message": "the line is longer than 65536 bytes",
    }  # fmt: skip
    assert [e["line"] for e in report["errors"]] == list(range(1, 101))
    assert "and 50 more refused lines (the first 100 are listed)" in plain.stdout
    assert len(plain.stdout.splitlines()) == 102
