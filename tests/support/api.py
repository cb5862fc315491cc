"""Helpers for the HTTP API tests: a server (subprocess or in-process), a small sync
client that checks every answer against the OpenAPI document, and installing teams.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from models.crypto import KeyVault
from models.db import session_factory
from tests.support.ports import free_port
from tests.support.services import NAMESPACE
from tests.support.stacks import Stack, ogv_command
from worker import inventory
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig, build_app, start_api
from worker.web.client import DEFAULT_QUEUE, ValidationClient
from worker.web.openapi import document

TOKEN = "test-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


# -- checking answers against the document ---------------------------------------------


def _parameter(match: re.Match[str]) -> str:
    return "(.+)" if match.group(1) == "team_id" else "([^/]+)"


class OpenApi:
    """Finds the documented response of an answer and validates the body against it."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(dict(doc), default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:ogv", resource)
        # A team id may hold "/"; no other path parameter can.
        self.routes = [
            (re.compile("^" + re.sub(r"\\\{([^}]+)\\\}", _parameter, re.escape(path)) + "$"), path)
            for path in doc["paths"]
        ]

    def _resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def _validate(self, pointer: str, body: Any) -> None:
        schema = {"$ref": f"urn:ogv#{pointer}"}
        Draft202012Validator(schema, registry=self.registry).validate(body)

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        # "/v1/teams/1-a/key" is team "1-a/key" to GET, and team "1-a"'s key to PUT.
        matching = [t for rx, t in self.routes if rx.match(path)]
        template = next(
            (t for t in matching if method.lower() in self.doc["paths"][t]),
            matching[0] if matching else None,
        )
        operation = self.doc["paths"].get(template, {}).get(method.lower()) if template else None
        if operation is None:  # an unknown route or method: the generic error shape
            assert status in (401, 404, 405), (method, path, status)
            self._validate("/components/schemas/Error", body)
            return
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {template} answered undocumented {status}"
        response = self._resolve(responses[str(status)])
        schema = response["content"]["application/json"]["schema"]
        if "$ref" in schema:
            self._validate(schema["$ref"].removeprefix("#"), body)
        else:
            Draft202012Validator(schema).validate(body)


OPENAPI = OpenApi(document())


# -- a small client --------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str
    body: Any = field(default=None)


def call(
    base: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: bool = True,
    timeout: float = 30,
) -> Answer:
    """One HTTP call; the answer must be JSON and match the OpenAPI document."""
    host, port = base.removeprefix("http://").split(":")
    sent = dict(AUTH if auth else {})
    if body is not None:
        raw = json.dumps(body).encode()
        sent.update(JSON)
    sent.update(headers or {})
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=raw, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
        answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
    finally:
        conn.close()
    assert "Traceback" not in answer.text
    if method != "HEAD":
        answer.body = json.loads(text)
        OPENAPI.check(method, path.split("?")[0], answer.status, answer.body)
    return answer


# -- raw bytes -------------------------------------------------------------------------


@dataclass
class RawAnswer:
    """An answer read off a socket: the status, lower-cased headers, the body and all of it."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def exchange(base: str, payload: bytes, timeout: float = 10) -> RawAnswer:
    """Send `payload` as it is (no client fixes it up) and read until the server closes."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return RawAnswer(
        int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body, raw
    )


# -- servers ---------------------------------------------------------------------------


def api_env(base: Mapping[str, str], **settings: str) -> dict[str, str]:
    """`base` (a stack's environment, say) with the API's token, a queue of its own
    (nothing consumes what it publishes) and `settings` on top."""
    return {
        **base,
        "OGV_API_TOKEN": TOKEN,
        "OGV_NAMESPACE": f"{NAMESPACE}-api-{uuid.uuid4().hex[:8]}",
        **settings,
    }


class ApiProcess:
    """`ogv api` as a real child process."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.log_path = log_path
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> ApiProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*ogv_command(), "api", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ogv api exited: {self.log_path.read_text()[-2000:]}")
            try:
                if call(self.url, "GET", "/healthz", auth=False, timeout=5).status == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ogv api not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class ApiThread:
    """The API application on its own event loop in a daemon thread (in-process).

    Served by `start_api`, as `ogv api` serves it: the same runner, connection handler
    and access log.
    """

    def __init__(self, client: ValidationClient, config: ApiConfig) -> None:
        self.app = build_app(client, config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = await start_api(self.app, "127.0.0.1", self.port)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> ApiThread:
        self._thread.start()
        assert self._ready.wait(10), "the in-process API did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)


def stack_client(stack: Stack, broker_url: str | None = None) -> ValidationClient:
    """A client for a test stack: its database, its broker (or `broker_url`), its queue."""
    return ValidationClient(
        broker_url or stack.env["OGV_BROKER_URL"],
        stack.env["OGV_DATABASE_URL"],
        queue=stack.env.get("OGV_NAMESPACE", DEFAULT_QUEUE),
    )


# -- data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """An organization with one Opsgenie account installed and its teams (label: id/key)."""

    org: int
    integration: int
    teams: dict[str, str]
    keys: dict[str, str]


def install(
    database_url: str, fernet_key: str, fake: FakeOpsgenie, cases: Mapping[str, KeyScenario]
) -> Account:
    """Install an account and one team per case, in-process; keys are set on the fake."""
    org = uuid.uuid4().int % 10**9 + 1
    teams, keys = {}, {}
    with session_factory(database_url).begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"acct-{org}",
            base_url=fake.url,
            allowed_base_urls=[fake.url],
        )
        for label, scenario in cases.items():
            keys[label] = f"key-{uuid.uuid4()}"
            fake.set_key(keys[label], scenario)
            team = inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=label,
                integration_key=keys[label],
                vault=KeyVault([fernet_key.encode()]),
            )
            teams[label] = team.id
        integration_id = integration.id
    return Account(org, integration_id, teams, keys)
