"""RabbitMQ for the tests: a virtual host of the session's own, queue types, and a node
of the tests' own to restart.

The machine's RabbitMQ is found at OGV_TEST_RABBITMQ_URL (default: guest on the
loopback). Each test session gets a virtual host of its own, deleted at its end:
the durable quorum queues and the delayed-delivery queues the workers declare go
with it, and sessions running at the same time never share a queue. The machine's
node is never stopped: a test that restarts RabbitMQ starts a `RabbitNode` of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection

from tests.support.ports import free_port

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


def _script(name: str) -> str | None:
    """A RabbitMQ script run as the calling user: Debian's wrappers in /usr/sbin switch to
    the `rabbitmq` user and read /etc/rabbitmq, so the scripts behind them are used."""
    debian = Path("/usr/lib/rabbitmq/bin") / name
    return str(debian) if debian.exists() else shutil.which(name)


def node_missing() -> Exception | None:
    """None when a RabbitMQ node of the tests' own can be started here; else why not."""
    for name in ("rabbitmq-server", "rabbitmqctl"):
        if _script(name) is None:
            return FileNotFoundError(f"{name} is not installed (Debian: rabbitmq-server)")
    return None


class RabbitNode:
    """A RabbitMQ node of the tests' own: the only one a test may stop or restart.

    It has a private node name, AMQP, distribution and epmd ports on the loopback, its
    own Erlang cookie (HOME is its directory), configuration, database and logs in
    `directory`, and no plugins (so no management or Prometheus port). Nothing of the
    machine's RabbitMQ is read or touched. `guest` may connect: the node listens on
    the loopback only.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"ogv-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """`rabbitmqctl` on this node."""
        done = subprocess.run(
            [str(_script("rabbitmqctl")), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    def start(self) -> RabbitNode:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[].\n")
        with (d / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(_script("rabbitmq-server"))],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while not port_open(self.port):
            if self.process.poll() is not None:
                tail = (d / "server.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"the tests' RabbitMQ node exited: {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError("the tests' RabbitMQ node did not listen after 120s")
            time.sleep(0.2)
        self.ctl("await_startup", timeout=120)
        return self

    def stop(self) -> None:
        """Stop the whole node (connections dropped; quorum queues kept on disk)."""
        if self.process is None or self.process.poll() is not None:
            return
        subprocess.run(
            [str(_script("rabbitmqctl")), "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        _wait(lambda: not port_open(self.port), 30, "the tests' RabbitMQ still listens")

    def ensure(self) -> None:
        """Start the node again if it is down."""
        if self.process is None or self.process.poll() is not None:
            self.start()

    def restart(self) -> float:
        """Stop the node and start it again; how long it was away (seconds)."""
        started = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - started

    def close(self) -> None:
        """Stop the node and the epmd it started (on its private port)."""
        self.stop()
        epmd = shutil.which("epmd")
        if epmd is not None:
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"],
                env=self.env,
                capture_output=True,
                timeout=10,
                check=False,
            )

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
