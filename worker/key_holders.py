"""Which running processes hold which encryption keys: by fingerprint, never by value.

`ogv keys rotate` re-encrypts every stored key under the newest encryption key. A
process that lacks that key can decrypt none of them afterwards (every check it
runs ends `undecryptable_key`), so before it starts the rotation asks:

- every live **worker**, through a Celery control broadcast (`KEYS_COMMAND`,
  answered by worker/operations/canary.py in each worker's main process). The
  embedded broker carries no broadcasts: there the workers cannot be asked;
- every live **API**, through its row in `api_processes`: each `ogv api` writes
  it when it starts and every `HEARTBEAT_SECONDS`, and deletes it when it stops.
  A row not refreshed for `STALE_AFTER` belongs to an API that died; it is ignored.

A fingerprint (`models.crypto.fingerprint`) names a key without revealing it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from models import ApiProcess, utcnow
from models.crypto import fingerprint
from worker.settings import Settings

KEYS_COMMAND = "ogv_key_fingerprints"
"""The Celery control command a worker answers with its keys' fingerprints."""
HEARTBEAT_SECONDS = 30.0
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)
"""An API row older than this belongs to an API that stopped without saying so."""


def fingerprints(settings: Settings) -> list[str]:
    """The fingerprints of this process's encryption keys, newest first."""
    return [fingerprint(key) for key in settings.fernet_keys()]


@dataclass(frozen=True)
class KeyHolder:
    """A live process and the fingerprints of the keys it holds."""

    kind: Literal["worker", "api"]
    name: str
    fingerprints: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def lacking(holders: Iterable[KeyHolder], newest: str) -> list[KeyHolder]:
    """The holders without the key whose fingerprint is `newest`."""
    return [holder for holder in holders if newest not in holder.fingerprints]


def worker_reply(settings: Settings) -> dict[str, Any]:
    """What a worker answers to `KEYS_COMMAND`: its namespace and its keys' fingerprints."""
    return {"namespace": settings.namespace, "fingerprints": fingerprints(settings)}


def workers_from_replies(replies: Sequence[Mapping[str, Any]], namespace: str) -> list[KeyHolder]:
    """The workers of `namespace` among broadcast replies (`[{hostname: reply}, ...]`).

    Deployments that share a broker hear each other's broadcasts; another
    namespace's workers are not this deployment's business.
    """
    found = []
    for reply in replies:
        for hostname, answer in reply.items():
            if isinstance(answer, dict) and answer.get("namespace") == namespace:
                prints = tuple(str(p) for p in answer.get("fingerprints") or ())
                found.append(KeyHolder("worker", hostname, prints))
    return sorted(found, key=lambda holder: holder.name)


def api_name(port: int) -> str:
    """How an API is named in `api_processes`: its host, port and process id."""
    return f"{socket.gethostname()}:{port} (pid {os.getpid()})"


def record_api(session: Session, name: str, prints: Sequence[str]) -> None:
    """Write (or refresh) API `name`'s row: it is alive and holds `prints`."""
    now = utcnow()
    joined = ",".join(prints)
    refreshed = session.execute(
        update(ApiProcess).where(ApiProcess.name == name).values(fingerprints=joined, seen_at=now)
    )
    if not getattr(refreshed, "rowcount", 0):
        session.add(ApiProcess(name=name, fingerprints=joined, started_at=now, seen_at=now))


def forget_api(session: Session, name: str) -> None:
    """Delete API `name`'s row: it is stopping."""
    session.execute(delete(ApiProcess).where(ApiProcess.name == name))


def live_apis(session: Session, now: datetime | None = None) -> list[KeyHolder]:
    """The APIs whose row was refreshed within `STALE_AFTER`."""
    since = (now or utcnow()) - STALE_AFTER
    rows = session.scalars(
        select(ApiProcess).where(ApiProcess.seen_at >= since).order_by(ApiProcess.name)
    )
    return [
        KeyHolder("api", row.name, tuple(p for p in row.fingerprints.split(",") if p))
        for row in rows
    ]
