"""Prometheus for the monitoring tests: Debian's `promtool` and `prometheus`, the
shipped rules and dashboard, and a real Prometheus process on a private port.

Without the binaries the tests that need them are skipped, and with `CI` set they fail
(`.ci/run` installs Debian's `prometheus` package).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ports import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULES_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "opsgenie-validator.json"
METRIC_NAME = re.compile(r"\b(ogv_[a-z0-9_]+)\b")


def binary(name: str) -> str:
    """The path of `promtool` or `prometheus`: skipped when missing, failed under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def rule_exprs() -> dict[str, str]:
    """Every alert of the shipped rules by name, its expression."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    """Every query of the shipped dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The service's metric names an expression reads (each starts with `ogv_`)."""
    return set(METRIC_NAME.findall(expr))


def rules_with_short_for(target: Path, for_: str = "1s") -> Path:
    """A copy of the shipped rules whose `for:` durations are all `for_`, so that a
    test sees alerts fire within seconds; nothing else is changed."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = for_
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


@dataclass
class Prometheus:
    """A running Prometheus, asked through its HTTP API."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def firing(self) -> list[dict[str, Any]]:
        """The alerts firing now, each with its labels and annotations."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [alert for alert in alerts if alert["state"] == "firing"]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_prometheus(
    directory: Path, targets: dict[str, str], rules: Path, timeout: float = 30
) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, its data in `directory`, scraping each job's
    `host:port` every second and evaluating `rules` every second; stopped afterwards."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ],
    }
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", log_path, process)
    try:
        wait_until(lambda: _ready(prometheus), timeout, lambda: prometheus.log()[-2000:])
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(prometheus: Prometheus) -> bool:
    assert prometheus.process.poll() is None, f"Prometheus exited: {prometheus.log()[-2000:]}"
    try:
        with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until(
    condition: Callable[[], object], timeout: float, why: Callable[[], object] = lambda: ""
) -> None:
    """Poll `condition` until it is true; fail with `why()` once `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not true within {timeout}s: {why()}")
