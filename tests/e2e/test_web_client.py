"""The web-app client and the documented Flask app, against a real worker on Redis+PostgreSQL.

The Flask app is docs/examples/flask_app.py, which docs/WEB_APPS.md shows verbatim.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.support.api import Account, install, stack_client
from tests.support.services import ROOT
from tests.support.stacks import BROKERS, Stack
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.client import ValidationClient

# The worker runs on PostgreSQL and a real broker (Redis, RabbitMQ): the client is for
# deployed web apps.
redis_postgres = pytest.mark.parametrize("stack", BROKERS, indirect=True, scope="module")

EXAMPLES = ROOT / "docs" / "examples"
WEB_APPS = ROOT / "docs" / "WEB_APPS.md"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[ValidationClient]:
    with stack_client(stack) as made:
        yield made


def account(stack: Stack, fake: FakeOpsgenie, **cases: KeyScenario) -> Account:
    return install(stack.env["OGV_DATABASE_URL"], stack.env["OGV_ENCRYPTION_KEYS"], fake, cases)


def test_the_documented_examples_are_the_files() -> None:
    doc = WEB_APPS.read_text()
    for name in ("flask_app", "django_views"):
        source = (EXAMPLES / f"{name}.py").read_text()
        assert source in doc, f"docs/WEB_APPS.md does not show docs/examples/{name}.py verbatim"
        compile(source, name, "exec")  # Django is not installed here; it must still parse


@redis_postgres
def test_the_flask_view_shows_each_outcome(
    client: ValidationClient, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid"), old=KeyScenario("invalid_key"))
    web = load_example("flask_app").create_app(client).test_client()
    base = f"/orgs/{acct.org}/opsgenie/{acct.integration}/teams"

    answers = {
        label: web.post(f"{base}/{team}/check")
        for label, team in [*acct.teams.items(), ("missing", f"{uuid.uuid4()}")]
    }

    shown = {
        label: (a.status_code, a.json["state"], a.json["outcome"]) for label, a in answers.items()
    }
    assert shown == {
        "ops": (200, "done", "valid"),
        "old": (200, "done", "invalid_key"),
        "missing": (200, "done", "invalid_team"),
    }
    page = web.get(f"/validations/{answers['ops'].json['request_id']}")
    assert page.status_code == 200
    assert page.json == answers["ops"].json
    assert not any(
        key in a.get_data(as_text=True) for a in answers.values() for key in acct.keys.values()
    )


@redis_postgres
def test_the_flask_view_answers_202_when_the_check_is_slower_than_the_form(
    client: ValidationClient, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, slow=KeyScenario("valid", latency_ms=800))
    web = load_example("flask_app").create_app(client, check_timeout=0.1).test_client()

    started = web.post(
        f"/orgs/{acct.org}/opsgenie/{acct.integration}/teams/{acct.teams['slow']}/check"
    )

    assert started.status_code == 202
    request_id = started.json["request_id"]
    deadline = time.monotonic() + 15
    while (page := web.get(f"/validations/{request_id}")).json["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert page.json["outcome"] == "valid"
    assert web.get(f"/validations/{uuid.uuid4()}").status_code == 404


@redis_postgres
def test_the_client_coalesces_and_reads(
    client: ValidationClient, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, slow=KeyScenario("valid", latency_ms=500))
    ids = (acct.org, acct.integration, acct.teams["slow"])

    first = client.request(*ids)
    second = client.request(*ids)
    final = client.wait(first.id, timeout=10)

    assert (first.state, first.requested_by, first.outcome) == ("pending", "api", None)
    assert second.id == first.id
    assert final is not None and (final.state, final.outcome) == ("done", "valid")
    assert client.get(first.id) == final
    assert client.get(str(uuid.uuid4())) is None
    assert client.get("not-a-request-id") is None
    assert client.request_and_wait(*ids, timeout=10).id != first.id  # a new check once done


def test_the_client_needs_no_worker_code() -> None:
    probe = (
        "import sys, worker.web.client; "
        "loaded = {'worker.celery', 'worker.tasks', 'celeryconfig'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
