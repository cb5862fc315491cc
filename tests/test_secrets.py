"""A sentinel key stored through `ogv team add` must appear nowhere but its encrypted column.

The flow runs through real processes: the CLI, a real worker, retries and a final
failure. Then every place the key could leak is searched: the broker's storage
(Redis or the embedded broker's SQLite file), the worker's log, `ogv status`, and
every column of every table except `teams.encrypted_key`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import redis
from sqlalchemy import create_engine, inspect, text

from tests.conftest import Stack
from tests.test_worker import install, ok_json, validate
from worker.fake_opsgenie import FakeOpsgenie, KeyScenario


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
        assert "_kombu.binding.ogv" in places["redis"]  # the search reads the broker
    else:
        places["database"] = database_text(f"sqlite:///{data_dir / 'ogv.sqlite3'}")
        places["embedded broker"] = sqlite_file_text(data_dir / "broker.sqlite3")
        assert "ogv.validate_request" in places["embedded broker"]

    assert "validation.finished" in places["worker log"]
    assert account["teams"]["fails"] in places["database"]
    for sentinel in sentinels:
        leaked = [name for name, content in places.items() if sentinel in content]
        assert leaked == [], f"the key appeared in {leaked}"
