"""The shipped rules and dashboard against a real Prometheus (issue 24).

A real Prometheus (Debian's package; private port, temporary directory, scraping and
evaluating every second) scrapes a real prefork worker's and a real `ogv api`'s
/metrics on Redis and PostgreSQL, with the shipped rules loaded. The rules are loaded
from a copy whose `for:` durations are all 1s, so that alerts fire within the test;
their expressions are the shipped ones, unchanged.

The fleet: four organizations of one account each on the fake's US host, two on
its EU host. Once every key has checked valid (one after a 429), the US
host answers 401 to every key (the mass-change guard trips) and the EU host answers
nginx's HTML 404 (every answer is `unrecognised_answer`; the base URL turns
unavailable). Then the matching alerts must fire, every dashboard query must return
data, and every metric the rules and dashboard name must be one the service exports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from models.crypto import KeyVault
from tests.support.api import ApiProcess
from tests.support.monitoring import http_get
from tests.support.ports import free_port
from tests.support.prometheus import (
    Prometheus,
    dashboard_exprs,
    metric_names,
    rule_exprs,
    rules_with_short_for,
    running_prometheus,
    wait_until,
)
from tests.support.services import ARTIFACTS, NAMESPACE
from tests.support.stacks import Stack, open_stack
from worker import inventory
from worker.platforms import OPSGENIE, OPSGENIE_EU, Platform
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario, Scenario

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(180)]

SUNSET = "ogv_sunset_days_left"
"""Days until an organization's earliest Opsgenie deadline (worker/readiness.py)."""
US_ACCOUNTS, EU_ACCOUNTS, TEAMS_PER_ACCOUNT = 4, 2, 10


@dataclass
class Monitored:
    stack: Stack
    api: ApiProcess
    prometheus: Prometheus
    fake: FakeOpsgenie
    worker_metrics: str
    api_metrics: str


@pytest.fixture(scope="module")
def monitored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitored]:
    with FakeOpsgenie(Scenario(default=KeyScenario("valid"))) as fake:
        worker_port, api_port = free_port(), free_port()
        stack = open_stack(
            "redis-postgres",
            request,
            tmp_path_factory,
            fake,
            OGV_NAMESPACE=f"{NAMESPACE}-prometheus",
            OGV_METRICS_PORT=str(worker_port),
            OGV_API_METRICS_PORT=str(api_port),
            OGV_METRICS_ADDRESS="127.0.0.1",
            OGV_API_TOKEN="prometheus-test-" + uuid.uuid4().hex,
            OGV_DISPATCH_WINDOW="1",
            OGV_MAX_ATTEMPTS="2",
            OGV_ACCOUNT_RATE="50",
        )
        api = ApiProcess(stack.env, ARTIFACTS / "logs" / f"api-{uuid.uuid4().hex[:8]}.log")
        api.start()
        directory = tmp_path_factory.mktemp("prometheus")
        rules = rules_with_short_for(directory / "alerts.yml")
        targets = {"worker": f"127.0.0.1:{worker_port}", "api": f"127.0.0.1:{api_port}"}
        try:
            with running_prometheus(directory, targets, rules) as prometheus:
                wait_until(prometheus.targets_up, 30, lambda: prometheus.api("targets"))
                yield Monitored(
                    stack,
                    api,
                    prometheus,
                    fake,
                    f"http://{targets['worker']}/metrics",
                    f"http://{targets['api']}/metrics",
                )
        finally:
            api.stop()
            stack.stop()


def install(
    stack: Stack, base_url: str, platform: Platform, accounts: int
) -> tuple[list[int], list[str]]:
    """`accounts` accounts at `base_url`, each of an organization of its own (the guard
    counts organizations); their organizations and keys, every key valid."""
    orgs = []
    vault = KeyVault([stack.env["OGV_ENCRYPTION_KEYS"].encode()])
    engine = create_engine(stack.env["OGV_DATABASE_URL"])
    keys = []
    with Session(engine) as session, session.begin():
        for a in range(accounts):
            org = uuid.uuid4().int % 10**9 + 1
            orgs.append(org)
            integration, _ = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"acct-{org}-{a}",
                base_url=base_url,
                allowed_base_urls=stack.env["OGV_ALLOWED_BASE_URLS"].split(","),
                platform=platform,
            )
            for t in range(TEAMS_PER_ACCOUNT):
                key = f"key-{uuid.uuid4()}"
                inventory.add_team(
                    session,
                    organization_id=org,
                    integration_id=integration.id,
                    label=f"team-{t}",
                    integration_key=key,
                    vault=vault,
                )
                keys.append(key)
    engine.dispose()
    return orgs, keys


def revalidate(stack: Stack, orgs: list[int]) -> None:
    for org in orgs:
        done = stack.ogv("revalidate", "--org", str(org), "--json", timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def driven(monitored: Monitored) -> Monitored:
    """The fleet checked valid, then the US host's 401 storm and the EU host's HTML."""
    stack, fake = monitored.stack, monitored.fake
    eu_url = fake.base_url_for("opsgenie-eu")
    us_orgs, us_keys = install(stack, fake.url, OPSGENIE, US_ACCOUNTS)
    eu_orgs, _ = install(stack, eu_url, OPSGENIE_EU, EU_ACCOUNTS)
    fake.set_key(us_keys[0], KeyScenario("throttle", times=1, period_seconds=1))
    revalidate(stack, us_orgs)
    revalidate(stack, eu_orgs)
    fake.set_host("opsgenie", "invalid_key")
    fake.set_host("opsgenie-eu", "html_404")
    revalidate(stack, us_orgs)
    revalidate(stack, eu_orgs)
    return monitored


def firing(prometheus: Prometheus) -> set[tuple[str, str]]:
    return {
        (alert["labels"]["alertname"], alert["labels"].get("base_url", ""))
        for alert in prometheus.firing()
    }


def exported(monitored: Monitored) -> set[str]:
    """Every family and sample name on the worker's and the API's /metrics pages."""
    names: set[str] = set()
    for url in (monitored.worker_metrics, monitored.api_metrics):
        status, page = http_get(url)
        assert status == 200, page
        for line in page.splitlines():
            if line.startswith("# TYPE "):
                names.add(line.split()[2])
            elif line and not line.startswith("#"):
                names.add(line.split("{")[0].split()[0])
    return names


def test_the_alerts_of_an_unrecognising_host_and_a_tripped_guard_fire(driven: Monitored) -> None:
    fake = driven.fake
    expected = {
        ("OgvGuardTripped", fake.url),
        ("OgvUnrecognisedAnswers", fake.base_url_for("opsgenie-eu")),
        ("OgvBaseUrlUnavailable", fake.base_url_for("opsgenie-eu")),
    }
    wait_until(lambda: expected <= firing(driven.prometheus), 45, lambda: firing(driven.prometheus))
    fired = firing(driven.prometheus)
    # Nothing else is wrong with this service: no other alert fires.
    assert {name for name, _ in fired} <= {name for name, _ in expected} | {"OgvSunsetNotReady"}
    annotations = [a["annotations"] for a in driven.prometheus.firing()]
    assert all(a["dashboard_url"] and "Runbook:" in a["description"] for a in annotations)


def test_the_sunset_alert_fires_on_the_exported_days_left(driven: Monitored) -> None:
    assert SUNSET in exported(driven)
    # The fleet is on Opsgenie and untried on JSM Ops: not ready, whatever the days left.
    days = driven.prometheus.query(f"min({SUNSET})")
    assert days, "the service exports the sunset gauge, yet Prometheus has no sample"
    if float(days[0]["value"][1]) < 30:
        wait_until(
            lambda: any(name == "OgvSunsetNotReady" for name, _ in firing(driven.prometheus)),
            30,
            lambda: firing(driven.prometheus),
        )


def test_every_dashboard_query_returns_data(driven: Monitored) -> None:
    exprs = dashboard_exprs()

    def empty() -> list[str]:
        return [expr for expr in exprs if not driven.prometheus.query(expr)]

    wait_until(lambda: not empty(), 30, empty)


def test_every_metric_the_rules_and_dashboard_read_is_exported(driven: Monitored) -> None:
    available = exported(driven)
    wanted: set[str] = set()
    for expr in [*rule_exprs().values(), *dashboard_exprs()]:
        wanted |= metric_names(expr)
    missing = wanted - available
    assert not missing, f"not exported by the worker or the API: {sorted(missing)}"
    assert {"ogv_worker_processes", "ogv_attempts_total", "ogv_due_requests"} <= available
    assert SUNSET in wanted
