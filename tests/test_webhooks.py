"""Standard Webhooks 1.0 (worker/webhooks.py): signatures computed here independently
with hmac, and the receiver's check (`worker.client.verify_webhook`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from worker.client import WebhookVerificationError, verify_webhook
from worker.webhooks import WebhookSecretError, decode_secret, headers, new_secret

BODY = json.dumps({"event": "team.status_changed", "change_id": 7}).encode()


def expected_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The signature as the specification defines it, from its text alone."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_a_delivery_carries_the_three_headers_with_one_signature_per_secret() -> None:
    old, new = new_secret(), new_secret()

    sent = headers([decode_secret(old), decode_secret(new)], "ogv-change-7", BODY, now=1700000000)

    assert sent == {
        "webhook-id": "ogv-change-7",
        "webhook-timestamp": "1700000000",
        "webhook-signature": " ".join(
            expected_signature(s, "ogv-change-7", "1700000000", BODY) for s in (old, new)
        ),
    }


def test_no_secret_no_headers() -> None:
    assert headers([], "ogv-change-7", BODY) == {}


def test_the_receiver_accepts_a_delivery_signed_by_its_secret() -> None:
    old, new = new_secret(), new_secret()
    sent = headers([decode_secret(old), decode_secret(new)], "ogv-change-7", BODY)

    assert verify_webhook(new, sent, BODY) == {"event": "team.status_changed", "change_id": 7}
    assert verify_webhook(old, {k.title(): v for k, v in sent.items()}, BODY.decode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: ({**h, "webhook-id": "ogv-change-8"}, b), "no webhook-signature matches"),
        (lambda h, b: (h, b.replace(b"7", b"8")), "no webhook-signature matches"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not a number"),
        (
            lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) - 301)}, b),
            "more than 300 seconds",
        ),
        (
            lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) + 301)}, b),
            "more than 300 seconds",
        ),
    ],
)
def test_a_forged_tampered_or_replayed_delivery_is_refused(change: object, message: str) -> None:
    secret = new_secret()
    sent = headers([decode_secret(secret)], "ogv-change-7", BODY)
    forged_headers, forged_body = change(sent, BODY)  # type: ignore[operator]

    with pytest.raises(WebhookVerificationError, match=message):
        verify_webhook(secret, forged_headers, forged_body)


def test_another_secrets_signature_is_refused() -> None:
    sent = headers([decode_secret(new_secret())], "ogv-change-7", BODY)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify_webhook(new_secret(), sent, BODY)


def test_the_tolerance_is_five_minutes_either_way() -> None:
    secret = new_secret()
    sent = headers([decode_secret(secret)], "ogv-change-7", BODY, now=1700000000)
    assert verify_webhook(secret, sent, BODY, now=1700000000 + 300)
    assert verify_webhook(secret, sent, BODY, now=1700000000 - 300)


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
    ],
)
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(WebhookSecretError):
        decode_secret(secret)
