"""The README's first command: `ogv demo` on the embedded default, from nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.stacks import ogv_command
from worker.platforms.sunset import WARN_DAYS, deadline


def test_demo_runs_every_outcome_on_the_embedded_default(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env["OGV_DATA_DIR"] = str(tmp_path / "data")

    done = subprocess.run(
        [*ogv_command(), "demo", "--json"], env=env, capture_output=True, text=True, timeout=180
    )

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    outcomes = {row["label"]: (row["outcome"], row["note"], row["hint"]) for row in report["rows"]}
    # A valid key on Opsgenie is told to move once 2027-04-05 is 30 days away or less.
    valid = "" if deadline().days_left() > WARN_DAYS else "deadline_close"
    assert outcomes == {
        "payments": ("valid", "", valid),
        "revoked": ("invalid_key", "", "key_disabled_or_deleted"),
        "api-created": ("key_lacks_access", "opsgenie_40301", "wrong_key_type"),
        "unprocessable": ("rejected", "", "rejected"),
        "throttled-once": ("valid", "", valid),
        "flaky": ("valid", "", valid),
        "down": ("error", "server_error", "platform_unreachable"),
        **{
            f"429-{form}": ("valid", "", valid)
            for form in (
                "retry-after",
                "retry-after-date",
                "ratelimit",
                "ratelimit-policy",
                "ratelimit-reset",
                "remaining-0",
                "no-header",
            )
        },
        "on-jsm-ops": ("valid", "", ""),
        "saved-as-us": ("invalid_key", "works on opsgenie-eu", "wrong_region"),
        "moved-to-jsm": ("invalid_key", "works on jsm-ops", "migrated_account"),
        "mistyped": ("invalid_key", "malformed_key", "malformed_key"),
        "captive-portal": ("error", "unrecognised_answer", "not_the_platform"),
        "retired-host": ("error", "unrecognised_answer", "not_the_platform"),
        "switched-off": ("invalid_key", "works on jsm-ops", "platform_retired"),
        "(no such team)": ("invalid_team", "", "team_missing"),
        "(no such integration)": ("invalid_integration", "", "integration_missing"),
    }
    assert all(row["outcome"] == row["expected"] for row in report["rows"])
    assert all(row["hint_text"] for row in report["rows"] if row["hint"])
    # The 429s named their waits: each was retried once, not backed off to the end.
    assert all(row["attempts"] == 2 for row in report["rows"] if row["label"].startswith("429"))
    platforms = {row["label"]: row["platform"] for row in report["rows"]}
    assert (platforms["on-jsm-ops"], platforms["payments"]) == ("jsm-ops", "opsgenie")
    assert (tmp_path / "data" / "ogv.sqlite3").exists()
    assert (tmp_path / "data" / "broker.sqlite3").exists()
    assert (tmp_path / "data" / "encryption.key").stat().st_mode & 0o077 == 0
