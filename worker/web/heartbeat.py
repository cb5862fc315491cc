"""The API's heartbeat: its row in `api_processes`, with its keys' fingerprints.

`ogv api` writes the row when it starts and every `key_holders.HEARTBEAT_SECONDS`
while it runs, and deletes it when it stops, so that `ogv keys rotate` can tell
whether every running API holds the new encryption key (worker/key_holders.py).
A database that is away a while costs a warning, never the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from worker import key_holders
from worker.web.config import CLIENT, CONFIG

log = logging.getLogger("ogv.api")

TASK = web.AppKey("heartbeat", asyncio.Task[None])


async def start(app: web.Application) -> None:
    """Write the row now, and again every little while (an `on_startup` hook)."""
    app[TASK] = asyncio.create_task(_beat_forever(app))


async def stop(app: web.Application) -> None:
    """Stop refreshing the row and delete it (an `on_cleanup` hook)."""
    app[TASK].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[TASK]
    name = app[CONFIG].process_name
    if name is not None:
        with contextlib.suppress(Exception):  # a row left behind goes stale by itself
            await asyncio.to_thread(_forget, app[CLIENT].sessions, name)


async def _beat_forever(app: web.Application) -> None:
    config, sessions = app[CONFIG], app[CLIENT].sessions
    assert config.process_name is not None
    while True:
        try:
            await asyncio.to_thread(_record, sessions, config.process_name, config.fingerprints)
        except Exception as exc:
            log.warning("api.heartbeat_failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(key_holders.HEARTBEAT_SECONDS)


def _record(sessions: sessionmaker[Session], name: str, prints: tuple[str, ...]) -> None:
    with sessions.begin() as session:
        key_holders.record_api(session, name, prints)


def _forget(sessions: sessionmaker[Session], name: str) -> None:
    with sessions.begin() as session:
        key_holders.forget_api(session, name)
