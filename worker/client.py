"""The client's stable import path for web apps: `worker.web.client`, and the check of a
signed webhook (`verify_webhook`, worker/webhooks.py)."""

from worker.web.client import (
    Ask,
    IdempotencyConflict,
    RequestView,
    ValidationClient,
    producer_app,
)
from worker.webhooks import WebhookVerificationError
from worker.webhooks import verify as verify_webhook

__all__ = [
    "Ask",
    "IdempotencyConflict",
    "RequestView",
    "ValidationClient",
    "WebhookVerificationError",
    "producer_app",
    "verify_webhook",
]
