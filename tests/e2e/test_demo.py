"""The README's first command: `ogv demo` on the embedded default, from nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.stacks import ogv_command


def test_demo_runs_every_outcome_on_the_embedded_default(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env["OGV_DATA_DIR"] = str(tmp_path / "data")

    done = subprocess.run(
        [*ogv_command(), "demo", "--json"], env=env, capture_output=True, text=True, timeout=180
    )

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    outcomes = {row["label"]: (row["outcome"], row["note"]) for row in report["rows"]}
    assert outcomes == {
        "payments": ("valid", ""),
        "revoked": ("invalid_key", ""),
        "api-created": ("key_lacks_access", "opsgenie_40301"),
        "unprocessable": ("rejected", ""),
        "throttled-once": ("valid", ""),
        "flaky": ("valid", ""),
        "down": ("error", "server_error"),
        "on-jsm-ops": ("valid", ""),
        "saved-as-us": ("invalid_key", "works on opsgenie-eu"),
        "moved-to-jsm": ("invalid_key", "works on jsm-ops"),
        "mistyped": ("invalid_key", "malformed_key"),
        "captive-portal": ("error", "unrecognised_answer"),
        "retired-host": ("error", "unrecognised_answer"),
        "(no such team)": ("invalid_team", ""),
        "(no such integration)": ("invalid_integration", ""),
    }
    assert all(row["outcome"] == row["expected"] for row in report["rows"])
    platforms = {row["label"]: row["platform"] for row in report["rows"]}
    assert (platforms["on-jsm-ops"], platforms["payments"]) == ("jsm-ops", "opsgenie")
    assert (tmp_path / "data" / "ogv.sqlite3").exists()
    assert (tmp_path / "data" / "broker.sqlite3").exists()
    assert (tmp_path / "data" / "encryption.key").stat().st_mode & 0o077 == 0
