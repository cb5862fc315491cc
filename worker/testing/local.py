"""Running the service's own processes on this machine: the demo, tests, benchmarks.

`LocalWorker` starts `celery -A worker worker` as a real child process with the
environment it is given, waits until it consumes, and stops it (politely, or with
SIGKILL when a test wants a worker to die mid-task).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

READY_MARK = "ready."


class WorkerStartError(RuntimeError):
    """Raised when a worker process exits or stays silent instead of becoming ready."""


class LocalWorker:
    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        pool: str = "threads",
        concurrency: int = 8,
        name: str = "ogv",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}-{os.getpid()}-%i@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> LocalWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerStartError(
                    f"worker exited with {self.process.returncode}: {self.log_tail()}"
                )
            if READY_MARK in self.log_path.read_text(errors="replace")[offset:]:
                return self
            time.sleep(0.1)
        self.stop()
        raise WorkerStartError(f"worker not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def child_pids(self) -> list[int]:
        """The pool's child processes (prefork), read from /proc."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill(self) -> None:
        """SIGKILL the whole worker (its process group): a crash, not a shutdown."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), escalating to SIGKILL after `timeout` seconds."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalWorker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
