"""The client's original import path, kept for web apps: see `worker.web.client`."""

from worker.web.client import Ask, RequestView, ValidationClient, producer_app

__all__ = ["Ask", "RequestView", "ValidationClient", "producer_app"]
