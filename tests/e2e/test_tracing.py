"""Tracing, opt-in (issue 24): one check is one trace, and no secret is in it.

`tests/support/traced_check.py` runs in a process of its own, with tracing on and an
in-memory exporter: the real API application and a real Celery worker (threads pool)
on Redis and PostgreSQL, and the fake Opsgenie. The spans it prints must make one
trace from `POST /v1/validations` through the published batch task to the probe and
the database's writes, and hold neither the key nor the API token anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from yarl import URL

from models.crypto import KeyVault
from tests.support.services import NAMESPACE
from tests.support.stacks import Stack, service_env
from worker import inventory
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

pytest.importorskip("opentelemetry.sdk", reason="the `tracing` extra is not installed")

from worker.tracing import safe_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def traced_check(
    tmp_path: Path, fake: FakeOpsgenie, redis_url: str, postgres_url: str, fernet_key: str
) -> tuple[dict[str, Any], list[dict[str, Any]], str, str]:
    token = "trace-token-" + uuid.uuid4().hex
    env = service_env(
        tmp_path,
        fake,
        OGV_DATABASE_URL=postgres_url,
        OGV_ENCRYPTION_KEYS=fernet_key,
        OGV_BROKER_URL=redis_url,
        OGV_NAMESPACE=f"{NAMESPACE}-trace",
        OGV_API_TOKEN=token,
        OGV_TRACING="on",
        # Asked to record every header: tracing must refuse (the key is one).
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST=".*",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=".*",
    )
    stack = Stack("traced", env, tmp_path / "worker.log")
    upgraded = stack.ogv("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    key = f"key-{uuid.uuid4()}"
    org = uuid.uuid4().int % 10**9 + 1
    engine = create_engine(postgres_url)
    with Session(engine) as session, session.begin():
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"traced-{org}",
            base_url=fake.url,
            allowed_base_urls=[fake.url],
        )
        team = inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration.id,
            label="traced",
            integration_key=key,
            vault=KeyVault([fernet_key.encode()]),
        )
        ids = {"TRACED_ORG": str(org), "TRACED_INTEGRATION": str(integration.id)}
        ids["TRACED_TEAM"] = team.id
    engine.dispose()
    fake.set_key(key, KeyScenario("valid"))
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.traced_check"],
        env={**env, **ids},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, *rest = done.stdout.splitlines()
    return json.loads(first)["answer"], [json.loads(line) for line in rest], key, token


def test_one_check_is_one_trace_without_a_secret(
    tmp_path: Path, fake: FakeOpsgenie, redis_url: str, postgres_url: str, fernet_key: str
) -> None:
    answer, spans, key, token = traced_check(tmp_path, fake, redis_url, postgres_url, fernet_key)
    assert answer["outcome"] == "valid", answer

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_kind.setdefault(span["kind"], []).append(span)
    [post] = [s for s in by_kind["SpanKind.SERVER"] if "/v1/validations" in json.dumps(s)]
    trace_id = post["context"]["trace_id"]
    in_trace = [s for s in spans if s["context"]["trace_id"] == trace_id]
    names = [s["name"] for s in in_trace]
    assert any(n.startswith("apply_async/ogv.validate_") for n in names), names
    assert any(n.startswith("run/ogv.validate_") for n in names), names
    probes = [s for s in in_trace if s["kind"] == "SpanKind.CLIENT" and "http" in json.dumps(s)]
    assert any(fake.url.rstrip("/") in json.dumps(p["attributes"]) for p in probes), probes
    writes = [s for s in in_trace if "UPDATE" in json.dumps(s["attributes"])]
    assert writes, [(s["name"], s["context"]["trace_id"] == trace_id) for s in spans]
    # Connected: every span of the trace but the POST has its parent in the trace.
    ids = {s["context"]["span_id"] for s in in_trace}
    assert all(s["parent_id"] in ids for s in in_trace if s is not post)

    everything = json.dumps(spans)
    assert key not in everything
    assert key[4:12] not in everything  # not even a piece of it
    assert token not in everything
    assert "authorization" not in everything.lower()


def test_a_client_url_keeps_its_path_only_on_an_allowed_base_url() -> None:
    allowed = ("https://api.opsgenie.com/",)
    assert (
        safe_url(URL("https://api.opsgenie.com/v2/alerts?limit=1"), allowed)
        == "https://api.opsgenie.com/v2/alerts"
    )
    assert (
        safe_url(URL("https://user:pw@hooks.example.com/T0/B0/s3cret?token=x"), allowed)
        == "https://hooks.example.com/"
    )


def test_off_by_default_and_then_no_instrumentation_is_loaded(tmp_path: Path) -> None:
    # (redis-py imports OpenTelemetry's API by itself when it is installed: not ours.)
    env = {n: v for n, v in os.environ.items() if not n.startswith(("OGV_", "OTEL_"))}
    program = (
        "import sys, worker.celery, worker.tasks, worker.web.api\n"
        "from worker.settings import get_settings\n"
        "assert not get_settings().tracing_on\n"
        "ours = ('worker.tracing', 'opentelemetry.instrumentation', 'opentelemetry.sdk.trace')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={**env, "OGV_DATA_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
