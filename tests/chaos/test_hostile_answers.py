"""Issue 14's hostile answers during a re-validation: every request finishes, no key is kept.

A stand-in Opsgenie (`tests.hostile_upstream`, a real aiohttp server) answers a
fleet of 216 teams with the audit's bodies, 400/401/403/422 each: a `code` of 200
characters, binary garbage, JSON nested past the parser's recursion limit, an
object where text belongs, the key echoed in upper case, in parts and in `code`,
control characters in `code` and `message`. A re-validation runs on PostgreSQL and
Redis with a real prefork worker and a real beat, whose sweeper hands on every
request left behind: before issue 14 it did so forever, as the batch that met the
nested JSON failed whole at every delivery. Then:

- every request is final, and ends as its kind of answer says (`KINDS`);
- no piece of 12 characters or more of any key, in any case, is in the database's
  columns, the worker's or beat's log, or what the HTTP API shows.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import insert, text

from models import Requester, Team
from models.crypto import KeyVault
from models.db import session_factory
from tests.support import chaos
from tests.support.api import ApiThread
from tests.support.hostile_upstream import KINDS, HostileUpstream, fragments, leaks
from tests.support.stacks import open_stack
from worker import inventory
from worker.enqueue import REVALIDATE_TASK
from worker.periodic import dispatch
from worker.platforms import PLATFORMS
from worker.settings import OFFICIAL_BASE_URLS
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient, producer_app

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(300)]

ACCOUNTS, PER_ACCOUNT = 12, 18
"""216 teams: 24 of each of the 9 kinds of answer, 18 per account."""


def populate(database_url: str, fernet_key: str, upstream: HostileUpstream) -> dict[str, Any]:
    """The fleet, inserted in bulk, one key per team; its kinds served by `upstream`."""
    org = 8_000_000 + uuid.uuid4().int % 1_000_000 * 10
    vault = KeyVault([fernet_key.encode()])
    names = list(KINDS)
    kinds: dict[str, str] = {}
    keys: dict[str, str] = {}
    with session_factory(database_url).begin() as session:
        rows = []
        for a in range(ACCOUNTS):
            _, link = inventory.add_integration(
                session,
                organization_id=org,
                account_name=f"hostile-{org}-{a}",
                base_url=upstream.url,
                allowed_base_urls=[upstream.url],
            )
            for t in range(PER_ACCOUNT):
                label = f"team-{t:03d}"
                team_id = Team.make_id(link.id, label)
                key = f"key-{uuid.uuid4()}"
                kinds[team_id] = names[(a * PER_ACCOUNT + t) % len(names)]
                keys[team_id] = key
                upstream.kinds[key] = kinds[team_id]
                rows.append(
                    {
                        "id": team_id,
                        "organization_integration_id": link.id,
                        "label": label,
                        "encrypted_key": vault.encrypt(key),
                    }
                )
        session.execute(insert(Team), rows)
    return {"org": org, "kinds": kinds, "keys": keys}


def start_run(env: dict[str, str], org: int) -> uuid.UUID:
    """A re-validation of the organization, started the way beat starts one."""
    run_id = dispatch.start_run(session_factory(env["OGV_DATABASE_URL"]), Requester.BEAT, org)
    app = producer_app(env["OGV_BROKER_URL"], env["OGV_NAMESPACE"])
    try:
        app.send_task(REVALIDATE_TASK, kwargs={"organization_id": org, "run_id": str(run_id)})
    finally:
        app.close()
    return run_id


def rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    with session_factory(database_url)() as session:
        return list(session.execute(text(sql), params).all())


def stored_rows(database_url: str, org: int) -> list[str]:
    """Every row the run wrote or touched, as JSON: requests, teams (but the encrypted
    key), their history, and the platform health of the stand-in."""
    queries = [
        "SELECT row_to_json(r)::text FROM validation_requests r WHERE organization_id = :org",
        "SELECT (to_jsonb(t) - 'encrypted_key')::text FROM teams t "
        "JOIN organization_integrations oi ON t.organization_integration_id = oi.id "
        "WHERE oi.organization_id = :org",
        "SELECT row_to_json(c)::text FROM team_status_changes c JOIN teams t ON c.team_id = t.id "
        "JOIN organization_integrations oi ON t.organization_integration_id = oi.id "
        "WHERE oi.organization_id = :org",
        "SELECT row_to_json(p)::text FROM platform_health p",
    ]
    return [row[0] for sql in queries for row in rows(database_url, sql, org=org)]


def outcomes(database_url: str, org: int) -> list[tuple[str, str, str | None, str, str]]:
    """(team, state, outcome, error_code, team status) of every request of the org."""
    return [
        tuple(row)
        for row in rows(
            database_url,
            "SELECT r.team_id, r.state, r.outcome, r.error_code, t.status "
            "FROM validation_requests r JOIN teams t ON t.id = r.team_id "
            "WHERE r.organization_id = :org",
            org=org,
        )
    ]


def api_documents(client: ValidationClient, org: int, request_ids: list[str]) -> list[str]:
    """What the HTTP API shows of the run: each request, and every page of the org's teams."""
    with ApiThread(client, ApiConfig(token=None, max_wait=0)) as api:

        def get(path: str) -> str:
            with urllib.request.urlopen(api.url + path, timeout=30) as answer:
                assert answer.status == 200
                return str(answer.read().decode())

        documents = [get(f"/v1/validations/{request_id}") for request_id in request_ids]
        cursor: str | None = None
        while True:
            page = get(
                f"/v1/organizations/{org}/teams?limit=100" + (f"&cursor={cursor}" if cursor else "")
            )
            documents.append(page)
            cursor = json.loads(page)["next_cursor"]
            if not cursor:
                return documents


def test_a_revalidation_answered_with_hostile_bodies_finishes_every_request(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    postgres_url: str,
    redis_url: str,
    fernet_key: str,
) -> None:
    with HostileUpstream() as upstream:
        fleet = populate(postgres_url, fernet_key, upstream)
        org, teams = fleet["org"], len(fleet["kinds"])
        allowed = [*OFFICIAL_BASE_URLS, *(fake.base_url_for(n) for n in PLATFORMS), upstream.url]
        stack = open_stack(
            "redis-postgres",
            request,
            tmp_path_factory,
            fake,
            # A queue of its own: no worker of a concurrent test run may take its messages.
            OGV_NAMESPACE=f"ogv-poison-{uuid.uuid4().hex[:6]}",
            OGV_ALLOWED_BASE_URLS=",".join(allowed),
            OGV_DISPATCH_WINDOW="0",
            OGV_BATCH_SIZE="54",
            OGV_ACCOUNT_RATE="200",
            OGV_ACCOUNT_BURST="20",
            # The sweeper on a scale of seconds, as in the chaos suite.
            OGV_TASK_SOFT_TIME_LIMIT="5",
            OGV_TASK_TIME_LIMIT="6",
            OGV_LEASE_SECONDS="8",
            OGV_OUTBOX_REPUBLISH_AFTER="3",
            OGV_SWEEP_INTERVAL="2",
            OGV_REVALIDATE_INTERVAL="10000000",  # the run is started by the test
        )
        beat = chaos.Beat(
            stack.env, stack.worker_log.with_name(f"{stack.worker_log.stem}-beat.log")
        )
        try:
            beat.start()
            started = time.monotonic()
            run_id = start_run(stack.env, org)
            assert chaos.wait_for_dispatch(postgres_url, run_id) == teams
            done_at = chaos.wait_for_finished(postgres_url, org, teams, timeout=180)
        finally:
            beat.stop()
            stack.stop()
        calls = dict(upstream.calls)

    found = outcomes(postgres_url, org)
    client = ValidationClient(redis_url, postgres_url, queue=stack.env["OGV_NAMESPACE"])
    try:
        request_ids = [
            row[0]
            for row in rows(
                postgres_url,
                "SELECT id FROM validation_requests WHERE organization_id = :org",
                org=org,
            )
        ]
        shown = api_documents(client, org, [str(r) for r in request_ids])
    finally:
        client.close()
    log = stack.worker_log.read_text(errors="replace")
    beat_log = beat.log_path.read_text(errors="replace")
    pieces = set().union(*(fragments(key) for key in fleet["keys"].values()))
    leaked = {
        "columns": len(leaks("\n".join(stored_rows(postgres_url, org)), pieces)),
        "worker_log": len(leaks(log, pieces)),
        "beat_log": len(leaks(beat_log, pieces)),
        "api": len(leaks("\n".join(shown), pieces)),
    }
    by_kind = Counter(
        (fleet["kinds"][team], state, outcome, error_code, status)
        for team, state, outcome, error_code, status in found
    )
    expected = Counter(
        {
            (
                kind,
                "done" if e.outcome != "error" else "failed",
                e.outcome,
                e.error_code,
                e.status,
            ): n
            for kind, n in Counter(fleet["kinds"].values()).items()
            for e in [KINDS[kind][1]]
        }
    )
    chaos.record(
        "hostile_answers",
        {
            "teams": teams,
            "requests": len(found),
            "final": sum(1 for _, state, *_ in found if state in chaos.FINAL_STATES),
            "outcomes": dict(Counter(outcome for _, _, outcome, _, _ in found)),
            "error_codes": dict(Counter(code or "none" for _, _, _, code, _ in found)),
            "calls_by_kind": calls,
            "api_documents": len(shown),
            "worker_log_bytes": len(log),
            "leaked_key_pieces": leaked,
            "run_seconds": round(done_at - started, 1),
        },
    )
    assert len(found) == teams  # one request per team, every one final (waited above)
    assert by_kind == expected
    assert leaked == {"columns": 0, "worker_log": 0, "beat_log": 0, "api": 0}
    assert "raised unexpected" not in log  # no task failed: every failure was one check's
