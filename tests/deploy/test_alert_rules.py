"""The shipped alert rules pass `promtool check rules` and their unit tests, and the
shipped dashboard and rules hang together (each alert's runbook step exists)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.support.prometheus import (
    DASHBOARD,
    RULES,
    RULES_TEST,
    binary,
    dashboard_exprs,
    rule_exprs,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_are_valid() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in done.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    firing = r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels"
    tested = set(re.findall(firing, RULES_TEST.read_text()))
    assert tested == set(rule_exprs())


def test_every_alert_names_a_runbook_step_of_the_readme_and_the_dashboard() -> None:
    text = RULES.read_text()
    readme = README.read_text()
    anchors = re.findall(r"\(#(runbook-[a-z-]+)\)", text)
    assert len(anchors) == len(rule_exprs()) == len(set(anchors))
    for anchor in anchors:
        assert f'<a id="{anchor}"></a>' in readme, anchor
    panels = {panel["id"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    linked = {int(n) for n in re.findall(r"dashboard_url: \S+viewPanel=(\d+)", text)}
    assert len(re.findall(r"dashboard_url:", text)) == len(rule_exprs())
    assert linked <= panels


def test_the_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool checks PromQL only inside rules: give it each query as a recording rule.
    exprs = dashboard_exprs()
    assert exprs
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{n}", "expr": e} for n, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.json"
    path.write_text(json.dumps(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
