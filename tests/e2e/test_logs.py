"""With OGV_LOG_FORMAT=json (as the test stacks run), a real worker writes one JSON
object per line for each finished validation, with the ids an operator searches by.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from tests.support.monitoring import check_all, install_direct
from tests.support.stacks import Stack
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

pytestmark = pytest.mark.parametrize("stack", ["redis-postgres"], indirect=True)


def events(log: str, name: str) -> list[dict[str, Any]]:
    """Every `name` event of the log; each must be a whole line of JSON."""
    found = []
    for line in log.splitlines():
        if f'"{name}"' in line:
            record = json.loads(line)  # fails the test if the line is not one JSON object
            if record.get("event") == name:
                found.append(record)
    return found


def test_each_finished_validation_is_one_json_line(stack: Stack, fake: FakeOpsgenie) -> None:
    assert stack.env["OGV_LOG_FORMAT"] == "json"
    account = install_direct(
        stack,
        fake,
        {
            "ok": KeyScenario("valid"),
            "revoked": KeyScenario("invalid_key"),
            "flaky": KeyScenario("server_error", times=1),
        },
    )
    teams = account["teams"]
    jobs = {label: (account["org"], account["integration"], team) for label, team in teams.items()}
    views = [asdict(view) for view in check_all(stack, jobs).values()]
    log = stack.worker_log.read_text(errors="replace")

    finished = {r["request_id"]: r for r in events(log, "validation.finished")}
    for view in views:
        record = finished[view["id"]]
        assert isinstance(record.pop("asctime"), str)
        assert record.pop("latency_ms") >= 0
        assert record == {
            "event": "validation.finished",
            "level": "INFO",
            "logger": "ogv.pipeline",
            "request_id": view["id"],
            "team_id": view["team_id"],
            "account": f"acct-{account['org']}",
            "platform": "opsgenie",
            "probe": "authenticate",
            "outcome": view["outcome"],
            "http_status": view["http_status"],
            "error_code": view["error_code"],
            "attempt": view["attempts"],
        }
    assert {finished[v["id"]]["outcome"] for v in views} == {"valid", "invalid_key"}
    flaky = next(v for v in views if v["team_id"] == teams["flaky"])
    [retry] = [
        r for r in events(log, "validation.retry_scheduled") if r["request_id"] == flaky["id"]
    ]
    assert (retry["reason"], retry["http_status"], retry["attempt"]) == ("server_error", 503, 1)
    assert [key for key in account["keys"].values() if key in log] == []
