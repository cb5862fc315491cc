"""Signed webhooks, as Standard Webhooks 1.0 specifies (SPEC §8).

Every POST to OGV_STATUS_WEBHOOK_URL carries three headers:

    webhook-id         the event's id, the same for every delivery of it
    webhook-timestamp  the delivery's time, in whole seconds since the epoch
    webhook-signature  `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
                       one per secret, separated by spaces

A secret is written `whsec_<base64 of 24 to 64 random bytes>`; the key is those
bytes. OGV_WEBHOOK_SECRET may hold several, separated by spaces: every delivery
is signed with each, so a receiver can move to a new secret without a gap.

`verify` is the receiver's half (`worker.client.verify_webhook`): it accepts a
delivery signed by the secret within `TOLERANCE_SECONDS` of now, either way, and
raises `WebhookVerificationError` otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

SECRET_PREFIX = "whsec_"
KEY_MIN_BYTES = 24
KEY_MAX_BYTES = 64
TOLERANCE_SECONDS = 300
SIGNATURE_VERSION = "v1"
EXAMPLE_SECRETS = frozenset({"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
"""The secret the specification's own examples use: known to everyone."""


class WebhookSecretError(ValueError):
    """Raised when a secret is not `whsec_` and the base64 of 24 to 64 bytes."""


class WebhookVerificationError(ValueError):
    """Raised when a delivery's signature is absent, wrong or too old (or too new)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError(
            f"a webhook secret is {SECRET_PREFIX} and base64 (A-Z, a-z, 0-9, +, /, =)"
        ) from None
    if not KEY_MIN_BYTES <= len(key) <= KEY_MAX_BYTES:
        raise WebhookSecretError(
            f"a webhook secret's base64 holds {KEY_MIN_BYTES} to {KEY_MAX_BYTES} bytes"
        )
    return key


def new_secret() -> str:
    """A fresh secret of 32 random bytes, as `whsec_...`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per key, separated by spaces."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(
        f"{SIGNATURE_VERSION},"
        + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in keys
    )


def headers(
    keys: Sequence[bytes], webhook_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The three headers of one delivery of `body` (none without a key)."""
    if not keys:
        return {}
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys, webhook_id, timestamp, body),
    }


def verify(
    secret: str,
    received: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Check a delivery against `secret` (`whsec_...`); return its JSON document.

    `received` are the request's headers (any case). Raises WebhookVerificationError
    when a header is missing, the timestamp is more than `tolerance` seconds away
    from now, or no signature is the secret's.
    """
    key = decode_secret(secret)
    found = {name.lower(): value for name, value in received.items()}
    webhook_id, stamp, signatures = (
        found.get(name) for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not webhook_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not a number of seconds")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is more than {tolerance:.0f} seconds away from now (a replay?)"
        )
    raw = body.encode() if isinstance(body, str) else body
    expected = sign([key], webhook_id, int(stamp), raw).encode()
    given = [s.encode() for s in signatures.split() if s.startswith(f"{SIGNATURE_VERSION},")]
    if not sum(hmac.compare_digest(expected, signature) for signature in given):
        raise WebhookVerificationError("no webhook-signature matches the secret")
    return json.loads(raw)
