"""What the benchmarks share: ports, processes, their memory and CPU, a throwaway database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from models.db import dispose_all
from models.migrate import upgrade

SAMPLE_EVERY = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ogv() -> str:
    return str(Path(sys.executable).with_name("ogv"))


def proc_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def proc_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_matching(text: str) -> list[int]:
    """The processes whose command line contains `text` (any other process's arguments
    may be any bytes: they are read leniently)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                if text in command.decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class Sampler:
    """Samples VmHWM and CPU time of named processes (and their descendants) on a thread.

    `watch_matching` also follows processes found by their command line (PostgreSQL
    backends of the bench database, the Redis server) for CPU time only.
    """

    def __init__(self) -> None:
        self._watched: dict[int, str] = {}
        self._matching: dict[str, str] = {}
        self._cpu: dict[int, tuple[str, float]] = {}
        self.peak_kb: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, pid: int, name: str) -> None:
        with self._lock:
            self._watched[pid] = name
        self.sample()

    def unwatch(self, pid: int) -> None:
        self.sample()
        with self._lock:
            self._watched.pop(pid, None)

    def watch_matching(self, text: str, name: str) -> None:
        with self._lock:
            self._matching[text] = name

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far per name (exited processes included)."""
        self.sample(everything=True)
        totals: dict[str, float] = {}
        with self._lock:
            for name, seconds in self._cpu.values():
                totals[name] = totals.get(name, 0.0) + seconds
        return totals

    def record(self, name: str, kb: int) -> None:
        with self._lock:
            self.peak_kb[name] = max(self.peak_kb.get(name, 0), kb)

    def sample(self, everything: bool = False) -> None:
        with self._lock:
            watched = dict(self._watched)
            matching = dict(self._matching)
        for pid, name in watched.items():
            self._sample_tree(pid, name)
        if matching and (everything or int(time.monotonic() / SAMPLE_EVERY) % 5 == 0):
            for text, name in matching.items():
                for pid in pids_matching(text):
                    self._sample_cpu(pid, name)

    def _sample_cpu(self, pid: int, name: str) -> None:
        seconds = proc_cpu_s(pid)
        if seconds is not None:
            with self._lock:
                self._cpu[pid] = (name, seconds)

    def _sample_tree(self, pid: int, name: str) -> None:
        kb = proc_kb(pid, "VmHWM")
        if kb is not None:
            self.record(name, kb)
        self._sample_cpu(pid, name)
        for index, child in enumerate(sorted(children_of(pid)), start=1):
            self._sample_tree(child, f"{name} child {index}")

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def peaks_mb(self, prefix: str = "") -> dict[str, float]:
        with self._lock:
            return {
                name: round(kb / 1024, 1)
                for name, kb in sorted(self.peak_kb.items())
                if name.startswith(prefix)
            }


def cpu_used(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, Any]:
    """CPU seconds per process between two `Sampler.cpu_s()` readings, and per call."""
    used = {
        name: round(seconds - before.get(name, 0.0), 2)
        for name, seconds in sorted(after.items())
        if seconds - before.get(name, 0.0) >= 0.05
    }
    total = sum(used.values())
    return {
        "seconds": used,
        "total_s": round(total, 1),
        "ms_per_validation": round(total / calls * 1000, 3) if calls else None,
    }


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


@contextmanager
def database(admin_url: str, prefix: str) -> Iterator[str]:
    """A migrated throwaway database on the server of `admin_url`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = libpq(make_url(admin_url).set(database="postgres").render_as_string(False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg's connect() takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def serving(
    argv: list[str], env: dict[str, str], log: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` (a server) with its output appended to `log`, until it listens on
    `port`; terminate it on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(15)
