"""RabbitMQ for the tests: a virtual host of the session's own, restarts, queue types.

The machine's RabbitMQ is found at OGV_TEST_RABBITMQ_URL (default: guest on the
loopback). Each test session gets a virtual host of its own, deleted at its end:
the durable quorum queues and the delayed-delivery queues the workers declare go
with it, and sessions running at the same time never share a queue.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection

RABBITMQ_URL = os.environ.get("OGV_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ_PORT = urlsplit(RABBITMQ_URL).port or 5672


def with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", "", ""))


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout


def probe(url: str = RABBITMQ_URL) -> Exception | None:
    """None when RabbitMQ answers at `url` and rabbitmqctl can manage it; else why not."""
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
        rabbitmqctl("list_vhosts", timeout=30)
    except Exception as exc:
        return exc
    return None


@contextmanager
def session_vhost(name: str) -> Iterator[str]:
    """A fresh virtual host `name` that guest may use; deleted afterwards."""
    user = urlsplit(RABBITMQ_URL).username or "guest"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield with_vhost(RABBITMQ_URL, name)
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60)


def queue_types(vhost: str) -> dict[str, tuple[str, bool]]:
    """The queues of `vhost`: name → (type, durable)."""
    out = rabbitmqctl(
        "list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "type", "durable"
    )
    queues = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            queues[parts[0]] = (parts[1], parts[2] == "true")
    return queues


def port_open(port: int = RABBITMQ_PORT) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.1)


def stop_rabbitmq() -> None:
    """Stop the whole RabbitMQ node (connections dropped; quorum queues kept on disk)."""
    subprocess.run(["rabbitmqctl", "stop"], capture_output=True, timeout=60, check=False)
    _wait(lambda: not port_open(), 60, "RabbitMQ still up")


def ensure_rabbitmq() -> None:
    """Start RabbitMQ if it is down (as .ci/run does) and wait until it serves."""
    if port_open():
        return
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=30, check=True)
    _wait(port_open, 120, "RabbitMQ not back")  # the node starts in the background
    subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True, timeout=120, check=False)


def restart_rabbitmq() -> float:
    """Stop RabbitMQ and start it again; how long it was away (seconds)."""
    started = time.monotonic()
    stop_rabbitmq()
    ensure_rabbitmq()
    return time.monotonic() - started
