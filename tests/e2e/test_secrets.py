"""A sentinel key stored through `ogv team add` must appear nowhere but its encrypted column.

The flow runs through real processes: the CLI, a real worker, retries and a final
failure. Then every place the key could leak is searched: the broker's storage
(Redis or the embedded broker's SQLite file), the worker's log, `ogv status`, and
every column of every table except `teams.encrypted_key`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from sqlalchemy import create_engine, inspect, text

from tests.support.monitoring import Flower, scrape
from tests.support.services import NAMESPACE
from tests.support.stacks import Stack, install, ok_json, validate
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario


def database_text(url: str) -> str:
    """Every value of every table, except the encrypted key column, as one string."""
    engine = create_engine(url)
    chunks = []
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            columns = [c["name"] for c in inspect(connection).get_columns(table)]
            if table == "teams":
                columns.remove("encrypted_key")
            quoted = ", ".join(f'"{c}"' for c in columns)
            for row in connection.execute(text(f'SELECT {quoted} FROM "{table}"')):
                chunks.append(repr(tuple(row)))
    engine.dispose()
    return "\n".join(chunks)


def redis_text(url: str) -> str:
    client = redis.Redis.from_url(url)
    chunks = []
    for key in client.scan_iter(count=1000):
        chunks.append(repr(key))
        kind = client.type(key).decode()
        if kind == "string":
            chunks.append(repr(client.get(key)))
        elif kind == "list":
            chunks.append(repr(client.lrange(key, 0, -1)))
        elif kind == "hash":
            chunks.append(repr(client.hgetall(key)))
        elif kind == "set":
            chunks.append(repr(client.smembers(key)))
        elif kind == "zset":
            chunks.append(repr(client.zrange(key, 0, -1, withscores=True)))
    client.close()
    return "\n".join(chunks)


def sqlite_file_text(path: Path) -> str:
    connection = sqlite3.connect(path)
    chunks = []
    for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        chunks.extend(repr(row) for row in connection.execute(f'SELECT * FROM "{table}"'))
    connection.close()
    return "\n".join(chunks)


def test_a_sentinel_key_leaks_nowhere(stack: Stack, fake: FakeOpsgenie) -> None:
    account = install(
        stack,
        fake,
        {
            "recovers": KeyScenario("server_error", times=1),
            "fails": KeyScenario("server_error", times=-1),
            "revoked": KeyScenario("invalid_key"),
        },
    )
    sentinels = list(account["keys"].values())
    outcomes = {
        label: validate(stack, account["org"], account["integration"], team)["outcome"]
        for label, team in account["teams"].items()
    }
    assert outcomes == {"recovers": "valid", "fails": "error", "revoked": "invalid_key"}
    status = json.dumps(ok_json(stack, "status", "--org", str(account["org"])))

    data_dir = Path(stack.env["OGV_DATA_DIR"])
    places = {
        "ogv status --json": status,
        "worker log": stack.worker_log.read_text(errors="replace"),
    }
    if "OGV_DATABASE_URL" in stack.env:
        places["database"] = database_text(stack.env["OGV_DATABASE_URL"])
        places["redis"] = redis_text(stack.env["OGV_BROKER_URL"])
        assert f"_kombu.binding.{NAMESPACE}" in places["redis"]  # the search reads the broker
    else:
        places["database"] = database_text(f"sqlite:///{data_dir / 'ogv.sqlite3'}")
        places["embedded broker"] = sqlite_file_text(data_dir / "broker.sqlite3")
        assert "ogv.validate_request" in places["embedded broker"]

    assert "validation.finished" in places["worker log"]
    assert account["teams"]["fails"] in places["database"]
    for sentinel in sentinels:
        leaked = [name for name, content in places.items() if sentinel in content]
        assert leaked == [], f"the key appeared in {leaked}"


# --- Flower and the metrics page, on a stack that serves both --------------------------


def leaks(places: dict[str, str], sentinels: list[str]) -> dict[str, list[str]]:
    """For each sentinel found anywhere, the places it was found in."""
    found = {s: [name for name, text in places.items() if s in text] for s in sentinels}
    return {sentinel: names for sentinel, names in found.items() if names}


def monitoring_places(stack: Stack, flower: Flower) -> dict[str, str]:
    """Where an operator looks: Flower, its log, the metrics page, the worker log, Redis."""
    return {
        "flower /api/tasks": flower.api_tasks(),
        "flower log": flower.log(),
        "metrics page": scrape(stack)[0],
        "worker log": stack.worker_log.read_text(errors="replace"),
        "redis": redis_text(stack.env["OGV_BROKER_URL"]),
        "database": database_text(stack.env["OGV_DATABASE_URL"]),
    }


def test_flower_and_the_metrics_page_show_no_key(
    watched: Stack, flower: Flower, fake: FakeOpsgenie
) -> None:
    account = install(
        watched,
        fake,
        {
            "recovers": KeyScenario("server_error", times=1),
            "fails": KeyScenario("server_error", times=-1),
            "revoked": KeyScenario("invalid_key"),
            "throttled": KeyScenario("throttle", times=1, period_seconds=1),
        },
    )
    teams = account["teams"]
    with ThreadPoolExecutor(len(teams)) as pool:
        answers = pool.map(
            lambda team: validate(watched, account["org"], account["integration"], team),
            teams.values(),
        )
        views = dict(zip(teams, answers, strict=True))
    assert {label: view["outcome"] for label, view in views.items()} == {
        "recovers": "valid",
        "fails": "error",
        "revoked": "invalid_key",
        "throttled": "valid",
    }
    places = monitoring_places(watched, flower)

    # The search reads what it claims to: the run is in Flower and on the metrics page.
    assert all(view["id"] in places["flower /api/tasks"] for view in views.values())
    assert (
        f'ogv_rate_limit_pauses_total{{account="acct-{account["org"]}"}}' in places["metrics page"]
    )
    assert "celery-task-meta-" not in places["redis"]  # results are ignored, never stored
    assert leaks(places, list(account["keys"].values())) == {}


def test_the_search_finds_a_key_passed_as_a_task_argument(watched: Stack, flower: Flower) -> None:
    """The check above is not vacuous: publish a task whose argument is a key (what the
    service never does) and the same search finds it in Flower and the worker log."""
    sentinel = f"key-{uuid.uuid4()}"
    published = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from worker.celery import app; "
            "app.send_task('ogv.canary', args=[sys.stdin.read()])",
        ],
        input=sentinel,
        env=watched.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert published.returncode == 0, published.stderr

    deadline = time.monotonic() + 20
    found: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        found = leaks(monitoring_places(watched, flower), [sentinel])
        if {"flower /api/tasks", "worker log"} <= set(found.get(sentinel, [])):
            break
        time.sleep(0.2)
    assert {"flower /api/tasks", "worker log"} <= set(found.get(sentinel, [])), found
