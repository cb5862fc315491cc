"""`ogv` commands in-process: their JSON output and how they refuse bad input."""

from __future__ import annotations

import json
import string
import tomllib
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.support.cli import call, runner
from tests.support.services import ROOT
from worker.operations.cli import app
from worker.platforms.sunset import WARN_DAYS, deadline
from worker.settings import get_settings


def add_integration(org: int, base_url: str = "https://api.opsgenie.com/") -> int:
    code, out = call(
        "integration", "add", "--org", str(org), "--account", "acme", "--base-url", base_url
    )
    assert code == 0, out
    return int(out["integration_id"])


def test_integration_team_and_status_round_trip(cli_env: None) -> None:
    integration = add_integration(41)
    code, team = call(
        "team",
        "add",
        "--org",
        "41",
        "--integration",
        str(integration),
        "--label",
        "payments",
        stdin="sentinel-key\n",
    )
    assert code == 0
    code, listing = call("status", "--org", "41")
    assert code == 0
    assert (listing["summary"]["unknown"], listing["next_cursor"]) == (1, None)
    rows = listing["teams"]
    days = deadline().days_left()
    hint = rows[0].pop("hint")
    assert (hint or {}).get("code") == (None if days > WARN_DAYS else "deadline_close")
    assert rows == [
        {
            "team_id": team["team_id"],
            "organization_id": 41,
            "integration_id": integration,
            "account": "acme",
            "platform": "opsgenie",
            "probe": "authenticate",
            "label": "payments",
            "key_version": 1,
            "status": "unknown",
            "status_changed_at": None,
            "last_checked_at": None,
            "last_error_code": None,
            "last_http_status": None,
            "works_on": [],
            "jsm_ops": None,
            "jsm_ops_checked_at": None,
            "deadline": "2027-04-05",
            "days_left": days,
        }
    ]


def test_base_url_off_the_allowlist_is_refused(cli_env: None) -> None:
    code, out = call(
        "integration",
        "add",
        "--org",
        "1",
        "--account",
        "acme",
        "--platform",
        "opsgenie",
        "--base-url",
        "https://collector.example/",
    )
    assert code == 1
    assert out["error"]["code"] == "invalid_base_url"
    assert "add it to OGV_ALLOWED_BASE_URLS" in out["error"]["message"]


def test_a_platform_alone_gives_its_official_base_url_and_probe(cli_env: None) -> None:
    code, out = call(
        "integration", "add", "--org", "5", "--account", "acme", "--platform", "jsm-ops"
    )

    assert code == 0, out
    assert {k: out[k] for k in ("platform", "base_url", "probe")} == {
        "platform": "jsm-ops",
        "base_url": "https://api.atlassian.com/jsm/ops/integration/",
        "probe": "alerts",
    }


def test_an_official_base_url_names_its_platform_and_a_probe_is_kept(cli_env: None) -> None:
    code, out = call(
        "integration", "add", "--org", "6", "--account", "acme",
        "--base-url", "https://api.opsgenie.com", "--probe", "alerts",
    )  # fmt: skip

    assert code == 0, out
    assert (out["platform"], out["probe"]) == ("opsgenie", "alerts")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "https://collector.example/"], "say which platform it serves"),
        (["--platform", "jsm-ops", "--probe", "authenticate"], "only the alerts probe"),
        (["--platform", "opsgenie", "--probe", "ping"], "not 'ping'"),
        (["--platform", "bigpanda"], "unknown platform 'bigpanda'"),
    ],
)
def test_a_platform_that_does_not_fit_is_refused_in_one_line(
    cli_env: None, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["integration", "add", "--org", "7", "--account", "acme", *args])

    assert result.exit_code == 1
    assert message in result.stderr
    assert "invalid_platform" in result.stderr and "Traceback" not in result.output


def test_duplicate_label_is_refused_with_a_stable_code(cli_env: None) -> None:
    integration = add_integration(42)
    args = ("team", "add", "--org", "42", "--integration", str(integration), "--label", "ops")
    assert call(*args, stdin="k1\n")[0] == 0
    code, out = call(*args, stdin="k2\n")
    assert (code, out["error"]["code"]) == (1, "duplicate_team")


def test_team_for_an_uninstalled_integration_is_not_found(cli_env: None) -> None:
    code, out = call(
        "team", "add", "--org", "43", "--integration", "999", "--label", "x", stdin="k\n"
    )
    assert (code, out["error"]["code"]) == (1, "not_found")


def test_a_refused_key_is_not_echoed(cli_env: None) -> None:
    integration = add_integration(44)
    secret = "bad key with spaces " + uuid.uuid4().hex
    result = runner.invoke(
        app,
        ["team", "add", "--org", "44", "--integration", str(integration), "--label", "x", "--json"],
        input=secret,
    )
    assert result.exit_code == 1
    assert secret not in result.output
    assert secret.split()[-1] not in result.output


def test_keys_generate_prints_a_fernet_key() -> None:
    from cryptography.fernet import Fernet

    result = runner.invoke(app, ["keys", "generate"])
    assert result.exit_code == 0
    Fernet(result.stdout.strip().encode())  # raises if it is not a key


labels = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(label=labels, account=st.text(max_size=300), key=st.text(string.printable, max_size=250))
def test_hostile_input_is_refused_cleanly_or_stored(
    cli_env: None, label: str, account: str, key: str
) -> None:
    """No input makes the CLI crash: it stores the team, or refuses with a code."""
    org = uuid.uuid4().int % 10**9 + 1
    result = runner.invoke(
        app,
        [
            "integration",
            "add",
            "--org",
            str(org),
            "--account",
            account or "a",
            "--base-url",
            "https://api.opsgenie.com/",
            "--json",
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if result.exit_code != 0:
        assert json.loads(result.stdout)["error"]["code"] == "invalid"
        return
    integration = json.loads(result.stdout)["integration_id"]
    result = runner.invoke(
        app,
        [
            "team",
            "add",
            "--org",
            str(org),
            "--integration",
            str(integration),
            "--label",
            label,
            "--json",
        ],
        input=key + "\n",
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    out = json.loads(result.stdout)
    if result.exit_code == 0:
        assert out["team_id"].endswith(f"-{label}")
    else:
        assert out["error"]["code"] in {"invalid", "duplicate_team"}
        secret = key.strip()
        if len(secret) > 3 and secret not in label and secret not in account:
            assert secret not in result.output


SQL_LOOKING = ["'; DROP TABLE teams; --", "1 OR 1=1", "\x00", "Robert'); --", "%s%s%n", "ñ" * 300]

hostile_urls = st.one_of(
    st.sampled_from(
        [
            "https://user:pass@api.opsgenie.com/",
            "https://api.opsgenie.com:8443/",
            "http://api.opsgenie.com/",
            "ftp://api.opsgenie.com/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://api.opsgenie.com.evil.test/",
            "https://evil.test/?next=https://api.opsgenie.com/",
            "https://api.opsgenie.com/#frag",
            "javascript:alert(1)",
            "",
        ]
    ),
    st.text(max_size=200),
)


def _row_counts() -> tuple[int, int, int]:
    from sqlalchemy import func, select

    from models import Integration, OrganizationIntegration, Team
    from worker.database import session_factory

    with session_factory()() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Integration, OrganizationIntegration, Team)
        )


@hsettings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(url=hostile_urls, account=st.one_of(st.sampled_from(SQL_LOOKING), st.text(max_size=40)))
def test_base_urls_off_the_allowlist_write_nothing(cli_env: None, url: str, account: str) -> None:
    before = _row_counts()
    result = runner.invoke(
        app,
        [
            "integration",
            "add",
            "--org",
            "77",
            "--account",
            account or "a",
            "--base-url",
            url,
            "--json",
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] in {
        "invalid_base_url",
        "invalid",
        "invalid_platform",
    }
    assert _row_counts() == before
    assert "Traceback" not in result.output


@pytest.mark.parametrize("label", SQL_LOOKING)
def test_sql_looking_labels_are_data(cli_env: None, label: str) -> None:
    integration = add_integration(78)
    code, out = call(
        "team",
        "add",
        "--org",
        "78",
        "--integration",
        str(integration),
        "--label",
        label,
        stdin="k\n",
    )
    if code == 0:
        assert out["team_id"].endswith(f"-{label}")
        code, listing = call("status", "--org", "78")
        assert label in [row["label"] for row in listing["teams"]]
    else:
        assert out["error"]["code"] == "invalid"


def test_db_upgrade_says_which_revisions_it_applied(ogv_env: dict[str, str]) -> None:
    get_settings.cache_clear()
    first = runner.invoke(app, ["db", "upgrade", "--json"])
    again = runner.invoke(app, ["db", "upgrade"])

    applied = [f"{n:04d}" for n in range(1, 14)]
    assert json.loads(first.stdout) == {"applied": applied}
    assert again.stdout.strip() == "the schema was already up to date"


def test_a_label_given_as_a_team_id_gets_a_hint_and_is_not_echoed(cli_env: None) -> None:
    secret = "6a1f0c2e-9d3b-4f5e-8a7c-1b2d3e4f5a6b"  # a key pasted into the wrong field

    for team in ("checkout", secret):
        result = runner.invoke(
            app, ["validate", "--org", "1", "--integration", "1", "--team", team, "--json"]
        )
        assert result.exit_code == 1
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "invalid" and "ids look like 2-payments" in error["message"]
        assert team not in result.stdout


@pytest.mark.parametrize(
    "team",
    [
        "0-payments",
        "12345678901-payments",
        "2-payments ",
        "2- payments",
        "2-pay\x1bments",
        "2-" + "a" * 299,
    ],
)
def test_validate_takes_only_what_has_the_shape_of_a_team_id(cli_env: None, team: str) -> None:
    """The shape `Team.make_id` gives, whole: not just a number and a dash in front."""
    result = runner.invoke(
        app, ["validate", "--org", "1", "--integration", "1", "--team", team, "--json"]
    )

    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "invalid" and "ids look like 2-payments" in error["message"]


def test_version_is_the_installed_package_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    result = runner.invoke(app, ["--version"])

    assert result.exit_code == 0
    assert result.stdout == pyproject["project"]["version"] + "\n"


def test_team_add_on_a_terminal_asks_for_the_key_without_echo(
    ogv_env: dict[str, str], fake: Any
) -> None:
    """A real pseudo-terminal: the prompt shows, the typed key never does."""
    import fcntl
    import os
    import pty
    import subprocess
    import termios
    import time

    from tests.support.stacks import ogv_command

    env = {**os.environ, "OGV_ALLOWED_BASE_URLS": f"https://api.opsgenie.com/,{fake.url}"}
    for args in (["db", "upgrade"], ["integration", "add", "--org", "9", "--account", "tty"]):
        assert subprocess.run([*ogv_command(), *args], env=env, capture_output=True).returncode == 0
    secret = "5e1d9c3b-tty-typed-key"
    leader, follower = pty.openpty()

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(follower, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [*ogv_command(), "team", "add", "--org", "9", "--integration", "1", "--label", "ops"],
        stdin=follower, stdout=follower, stderr=follower, env=env, preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    while b"Integration key" not in seen and time.monotonic() < deadline:
        seen += os.read(leader, 1024)
    os.write(leader, secret.encode() + b"\n")
    while process.poll() is None and time.monotonic() < deadline:
        try:
            seen += os.read(leader, 1024)
        except OSError:
            break
    process.wait(10)
    os.close(leader)

    assert process.returncode == 0, seen
    assert b"Integration key (not shown):" in seen and b"-ops\r\n" in seen
    assert secret.encode() not in seen


def test_status_fits_80_columns_and_a_valid_team_shows_no_error(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import update

    from models import Team
    from worker.database import session_factory

    integration = add_integration(81)
    label = "payments-platform-oncall-with-a-long-label"
    assert call("team", "add", "--org", "81", "--integration", str(integration),
                "--label", label, stdin="k-81\n")[0] == 0  # fmt: skip
    with session_factory().begin() as session:  # a check said valid: HTTP 200, no error code
        session.execute(update(Team).values(status="valid", last_http_status=200))
    monkeypatch.setenv("COLUMNS", "80")

    result = runner.invoke(app, ["status", "--org", "81"])

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and len(lines) == 3  # a line per team
    assert any(f"-{label}" in line for line in lines)  # the id is whole, not cut
    assert "HTTP" not in result.stdout
