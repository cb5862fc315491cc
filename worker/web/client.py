"""The Python client for web apps: ask for a check, read it, wait for its outcome.

A Flask or Django app needs the broker and database URLs and this module, not the
worker's Celery app or tasks: publishing goes through a small Celery instance of
its own that knows only the broker and the task's registered name
(`worker.enqueue.VALIDATE_TASK`). Recording, coalescing and idempotency are those
of `worker.enqueue.request_validation`, so a check asked for here is the same
request, with the same outcomes, as one asked for through the CLI or the HTTP API.

Errors reach the caller unchanged:

- `worker.checks.requests.IdempotencyConflict` when an idempotency key was used for
  another team;
- the broker's error when publishing failed; the request is committed by then,
  and the outbox sweeper publishes it later (asking again returns it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from models import Requester
from worker import embedded_broker
from worker.broker import ValidatorCelery, topology
from worker.checks.requests import Ask, IdempotencyConflict
from worker.database import session_factory
from worker.enqueue import (
    RequestView,
    expired,
    get_request,
    request_validation,
    request_validations,
    wait_for,
)
from worker.settings import Settings, get_settings, sqlalchemy_url

__all__ = ["Ask", "IdempotencyConflict", "RequestView", "ValidationClient", "producer_app"]

DEFAULT_QUEUE = "ogv"
"""The queue workers consume by default (`OGV_NAMESPACE`, celeryconfig.task_default_queue)."""


def producer_app(broker_url: str, queue: str = DEFAULT_QUEUE) -> Celery:
    """A Celery instance that can only publish: the broker, the queue and JSON, nothing else."""
    embedded_broker.register()  # so the embedded default's `ogvsqla+sqlite://` URL resolves
    app = ValidatorCelery("ogv-client", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # The queue as the workers declare it (on RabbitMQ: quorum, publisher confirms).
        **topology(broker_url, queue).celery_settings(queue),
    )
    return app


class ValidationClient:
    """Requests checks of teams' keys and reads their outcomes.

    Thread-safe; create one per process (after a pre-forking server forks) and
    share it between requests.
    """

    def __init__(
        self,
        broker_url: str,
        database_url: str,
        *,
        queue: str = DEFAULT_QUEUE,
        requested_by: Requester = Requester.API,
        pool_size: int | None = None,
    ) -> None:
        self.sessions: sessionmaker[Session] = session_factory(
            sqlalchemy_url(database_url), pool_size
        )
        self.app = producer_app(broker_url, queue)
        self.requested_by = requested_by

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ValidationClient:
        """A client for the configured service (`OGV_BROKER_URL`, `OGV_DATABASE_URL`,
        `OGV_NAMESPACE`)."""
        settings = settings or get_settings()
        return cls(
            settings.effective_broker_url,
            settings.effective_database_url,
            queue=settings.namespace,
            pool_size=settings.database_pool_size,
        )

    def request(
        self,
        organization_id: int,
        integration_id: int,
        team_id: str,
        idempotency_key: str | None = None,
    ) -> RequestView:
        """Ask for a check; a team with one pending or running gets that one back."""
        return request_validation(
            self.sessions,
            self.app,
            organization_id=organization_id,
            integration_id=integration_id,
            team_id=team_id,
            requested_by=self.requested_by,
            idempotency_key=idempotency_key,
        ).view

    def request_many(self, asks: Sequence[Ask]) -> dict[Ask, RequestView]:
        """Ask for many checks at once: one transaction, and one batch message for the new ones.

        Each ask is answered as `request` would answer it alone; repeated asks
        share their answer.
        """
        submitted = request_validations(
            self.sessions, self.app, asks, requested_by=self.requested_by
        )
        views = {ask: answer.view for ask, answer in submitted.items()}
        for ask in asks:
            if ask not in views:  # its team's active check finished meanwhile: ask again
                views[ask] = self.request(ask.organization_id, ask.integration_id, ask.team_id)
        return views

    def get(self, request_id: uuid.UUID | str) -> RequestView | None:
        """The request's current state and outcome; None if there is no such request."""
        parsed = _parse_id(request_id)
        return get_request(self.sessions, parsed) if parsed else None

    def expired(self, request_id: uuid.UUID | str) -> bool:
        """Whether a request not on record was pruned by the retention (HTTP 410)."""
        parsed = _parse_id(request_id)
        return expired(self.sessions, parsed) if parsed else False

    def wait(self, request_id: uuid.UUID | str, timeout: float) -> RequestView | None:
        """Block up to `timeout` seconds for the outcome (less when the request is
        `confirming` and its second check is due later); returns its last view."""
        parsed = _parse_id(request_id)
        return wait_for(self.sessions, parsed, timeout) if parsed else None

    def request_and_wait(
        self,
        organization_id: int,
        integration_id: int,
        team_id: str,
        timeout: float,
        idempotency_key: str | None = None,
    ) -> RequestView:
        """Ask for a check and wait up to `timeout` seconds; check `.is_final` on the answer."""
        view = self.request(organization_id, integration_id, team_id, idempotency_key)
        if view.is_final:
            return view
        return self.wait(view.id, timeout) or view

    def close(self) -> None:
        """Release the broker connections (the database pool is the process's)."""
        self.app.close()

    def __enter__(self) -> ValidationClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _parse_id(request_id: uuid.UUID | str) -> uuid.UUID | None:
    if isinstance(request_id, uuid.UUID):
        return request_id
    try:
        return uuid.UUID(request_id)
    except ValueError:
        return None
