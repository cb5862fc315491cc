"""`ogv keys rotate` against real workers and a real API: refused while one of them
lacks the new key, and, once they were restarted with it, every check still works.

The README's steps, in order, on a database and a namespace of this test's own (the
rotation re-encrypts every team of its database, and asks every worker of its
namespace).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import make_url

from models.crypto import fingerprint
from models.migrate import upgrade
from tests.support.api import ApiProcess, api_env, call
from tests.support.services import ARTIFACTS, POSTGRES_URL
from tests.support.stacks import ogv_command, service_env
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker
from worker.testing.scenario import KeyScenario


@pytest.fixture
def own_database(postgres_url: str) -> Iterator[str]:
    """An empty, migrated PostgreSQL database of this test's own (after the session's)."""
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    name = f"ogv_rotation_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ogv(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ogv_command(), *args], env=env, input=stdin, capture_output=True, text=True, timeout=90
    )


def test_rotation_waits_for_every_worker_and_api_to_hold_the_new_key(
    tmp_path: Path, fake: FakeOpsgenie, own_database: str, redis_url: str
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    namespace = f"ogv-rot-{uuid.uuid4().hex[:8]}"
    before = service_env(
        tmp_path,
        fake,
        OGV_DATABASE_URL=own_database,
        OGV_BROKER_URL=redis_url,
        OGV_ENCRYPTION_KEYS=old,
        OGV_NAMESPACE=namespace,
    )
    after = before | {"OGV_ENCRYPTION_KEYS": f"{new},{old}"}
    integration = json.loads(
        ogv(before, "integration", "add", "--org", "5", "--account", "rot", "--json").stdout
    )["integration_id"]
    secret = f"rotation-{uuid.uuid4()}"
    fake.set_key(secret, KeyScenario("valid"))
    added = ogv(
        before,
        *("team", "add", "--org", "5", "--integration", str(integration), "--label", "ops"),
        stdin=secret + "\n",
    )
    assert added.returncode == 0, added.stderr

    logs = ARTIFACTS / "logs" / f"rotation-{namespace}"
    worker = LocalWorker(before, logs / "worker-old.log", name="rot-old", concurrency=2).start()
    api = ApiProcess(api_env(before, OGV_NAMESPACE=namespace), logs / "api-old.log").start()
    try:
        # The README's old order: the new key in the environment of `ogv` only.
        refused = ogv(after, "keys", "rotate")

        assert refused.returncode == 1, refused.stdout + refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith(
            f"error (keys_not_deployed): 2 of 2 live processes lack the new key "
            f"{fingerprint(new.encode())} (the first of OGV_ENCRYPTION_KEYS): "
        )
        assert "worker rot-old-" in line and f"api {api.port}" not in line
        assert f":{api.port} (pid " in line
        assert line.endswith("; restart them with it first, or pass --force")
        assert new not in refused.stderr + refused.stdout
        assert old not in refused.stderr + refused.stdout

        # The API tells an authenticated caller which keys it holds, and nobody else.
        assert call(api.url, "GET", "/healthz").body["key_fingerprints"] == [
            fingerprint(old.encode())
        ]
        assert "key_fingerprints" not in call(api.url, "GET", "/healthz", auth=False).body
    finally:
        worker.stop()
        api.stop()

    # The README's order: restart every worker and API with the new key, then rotate.
    worker = LocalWorker(after, logs / "worker-new.log", name="rot-new", concurrency=2).start()
    api = ApiProcess(api_env(after, OGV_NAMESPACE=namespace), logs / "api-new.log").start()
    try:
        rotated = ogv(after, "keys", "rotate", "--json")
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert json.loads(rotated.stdout)["rotated"] == 1

        # Only the new key is needed now; the worker that holds it checks the team.
        only_new = after | {"OGV_ENCRYPTION_KEYS": new}
        checked = ogv(
            only_new,
            *("validate", "--org", "5", "--integration", str(integration)),
            *("--team", f"{integration}-ops", "--wait", "30", "--json"),
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout)["outcome"] == "valid"
    finally:
        worker.stop()
        api.stop()

    # A stopped API deletes its row: with nothing live, nothing is asked of anyone.
    alone = ogv(after, "keys", "rotate", "--json")
    assert alone.returncode == 0, alone.stdout + alone.stderr
