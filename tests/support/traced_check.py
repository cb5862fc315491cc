"""One check, traced, in a process of its own: `python -m tests.support.traced_check`.

Run with a stack's environment and OGV_TRACING=on. Tracing starts first, with an
in-memory exporter in place of OTLP; then the real API application (on a free port)
and a real Celery worker (threads pool, consuming the stack's queue from its broker)
run in this process, so that every span of the check, from the API's POST through
the published task to the probe and the database, lands in that one exporter. The
key and the team come from the environment (TRACED_*). Prints the spans as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import urllib.request

from celery.contrib.testing.worker import start_worker
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.ports import free_port
from worker import tracing
from worker.settings import get_settings

memory = InMemorySpanExporter()
settings = get_settings()
tracing.start(settings, "test", processor=SimpleSpanProcessor(memory))

from worker.celery import app  # noqa: E402  (after tracing: the worker's hooks see it on)
from worker.web.api import build_app, start_api  # noqa: E402
from worker.web.client import ValidationClient  # noqa: E402
from worker.web.config import api_config  # noqa: E402


def serve_api(port: int, ready: threading.Event) -> None:
    async def main() -> None:
        app_ = build_app(ValidationClient.from_settings(settings), api_config(settings, "", False))
        runner = await start_api(app_, "127.0.0.1", port)
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def post_validation(port: int) -> dict[str, object]:
    body = json.dumps(
        {
            "organization_id": int(os.environ["TRACED_ORG"]),
            "integration_id": int(os.environ["TRACED_INTEGRATION"]),
            "team_id": os.environ["TRACED_TEAM"],
        }
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/validations?wait=20",
        data=body,
        headers={
            "Authorization": f"Bearer {os.environ['OGV_API_TOKEN']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def main() -> None:
    port, ready = free_port(), threading.Event()
    threading.Thread(target=serve_api, args=(port, ready), daemon=True).start()
    assert ready.wait(20), "the API did not start"
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10
    ):
        answer = post_validation(port)
    tracing.stop()
    print(json.dumps({"answer": answer}))  # noqa: T201 (the output of this program)
    for span in memory.get_finished_spans():
        print(span.to_json(indent=None))  # noqa: T201
    sys.stdout.flush()


if __name__ == "__main__":
    main()
