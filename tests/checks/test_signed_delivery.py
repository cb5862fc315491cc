"""Webhook deliveries (worker/checks/events.py `post`) to a real local HTTP receiver:
signed with every secret, the bytes signed are the bytes sent, and a redelivery keeps
its webhook-id."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from worker.checks import events
from worker.checks.platform_health import idempotency_key
from worker.client import verify_webhook
from worker.webhooks import decode_secret, new_secret


@dataclass
class Receiver:
    """A real HTTP server on a free port that records each POST's headers and bytes."""

    url: str = ""
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def hook(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.deliveries.append((headers, await request.read()))
        return web.json_response({})


def deliver(*posts: dict[str, Any]) -> Receiver:
    """Start a receiver, `events.post` each of `posts` (its keyword arguments) to it."""
    receiver = Receiver()

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", receiver.hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        try:
            async with aiohttp.ClientSession() as session:
                for post in posts:
                    await events.post(session, receiver.url, seconds=5, **post)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return receiver


def signature_of(secret: str, headers: dict[str, str], body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


CHANGE = {"event": "team.status_changed", "change_id": 41, "team_id": "3-ops"}


def test_every_delivery_is_signed_with_each_secret() -> None:
    old, new = new_secret(), new_secret()
    keys = [decode_secret(old), decode_secret(new)]
    receiver = deliver({"body": CHANGE, "keys": keys}, {"body": CHANGE, "keys": keys})

    (first, body), (again, body_again) = receiver.deliveries
    assert json.loads(body) == CHANGE and body_again == body
    assert first["webhook-id"] == again["webhook-id"] == "ogv-change-41"
    assert first["idempotency-key"] == "ogv-change-41"
    assert first["content-type"] == "application/json"
    for headers in (first, again):
        assert headers["webhook-signature"].split(" ") == [
            signature_of(old, headers, body),
            signature_of(new, headers, body),
        ]
        assert verify_webhook(old, headers, body) == CHANGE
        assert verify_webhook(new, headers, body) == CHANGE


def test_a_platform_or_guard_document_is_signed_under_its_own_id() -> None:
    secret = new_secret()
    trip = {"event": "guard.tripped", "base_url": "https://api.opsgenie.com/", "at": "2027-01-01"}
    receiver = deliver(
        {"body": trip, "idempotency_key": idempotency_key(trip), "keys": [decode_secret(secret)]}
    )

    [(headers, body)] = receiver.deliveries
    assert headers["webhook-id"] == idempotency_key(trip)
    assert headers["webhook-signature"] == signature_of(secret, headers, body)


def test_without_a_secret_nothing_is_signed() -> None:
    receiver = deliver({"body": CHANGE})

    [(headers, body)] = receiver.deliveries
    assert json.loads(body) == CHANGE
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & set(headers)
