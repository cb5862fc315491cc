"""The client's stable import path for web apps: a re-export of `worker.web.client`."""

from worker.web.client import (
    Ask,
    IdempotencyConflict,
    RequestView,
    ValidationClient,
    producer_app,
)

__all__ = ["Ask", "IdempotencyConflict", "RequestView", "ValidationClient", "producer_app"]
