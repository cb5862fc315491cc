"""The Python client for web apps: store keys, ask for checks, read and wait for them.

A Flask or Django app needs the broker and database URLs and this module, not the
worker's Celery app or tasks: publishing goes through a small Celery instance of
its own that knows only the broker and the task's registered name
(`worker.enqueue.VALIDATE_TASK`). Recording, coalescing and idempotency are those
of `worker.enqueue.request_validation`, so a check asked for here is the same
request, with the same outcomes, as one asked for through the CLI or the HTTP API.

It also manages what is checked, as a settings page does: integrations (install,
list, disable, enable, remove) and teams (store a key, list, read, replace the key,
remove). Storing or replacing a key asks for a check of it in the same transaction,
and may wait for its outcome. Keys are encrypted with the `encryption_keys` given
(`OGV_ENCRYPTION_KEYS`) and never returned. Every write is audited in its own
transaction (`worker.audit`), as the client's `actor` or the `actor` a call names
(the CLI's `cli:<os user>`, the API's `token:<name>`).

Errors reach the caller unchanged:

- `worker.errors.RecordError` (with a stable `code`) when a write is refused: a
  malformed key or label (the message never repeats either), `not_found`,
  `duplicate_team`, `invalid_platform`;
- `worker.checks.requests.IdempotencyConflict` when an idempotency key was used for
  another team or another create;
- the broker's error when publishing failed; the request is committed by then,
  and the outbox sweeper publishes it later (asking again returns it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from models import IdempotentCreate, IntegrationStatus, Requester, TeamStatus, ValidationRequest
from models.crypto import KeyVault
from worker import audit, embedded_broker, inventory
from worker.broker import ValidatorCelery, topology
from worker.checks import requests
from worker.checks.requests import Ask, IdempotencyConflict
from worker.checks.rules import CheckOptions
from worker.cursors import DEFAULT_PAGE
from worker.database import session_factory
from worker.enqueue import (
    RequestView,
    expired,
    get_request,
    publish,
    request_validation,
    request_validations,
    wait_for,
)
from worker.errors import NotFound
from worker.inventory import IntegrationPage, IntegrationView, RemovedIntegration, RemovedTeam
from worker.settings import OFFICIAL_BASE_URLS, Settings, get_settings, sqlalchemy_url
from worker.web import teams
from worker.web.teams import TeamPage, TeamRow

__all__ = [
    "Ask",
    "IdempotencyConflict",
    "IntegrationPage",
    "IntegrationView",
    "RemovedIntegration",
    "RemovedTeam",
    "RequestView",
    "SavedTeam",
    "TeamPage",
    "TeamRow",
    "ValidationClient",
    "producer_app",
]

DEFAULT_QUEUE = "ogv"
"""The queue workers consume by default (`OGV_NAMESPACE`, celeryconfig.task_default_queue)."""
DEFAULT_ACTOR = "client"
"""How the audit log names a client's writes unless it, or the call, names another."""


@dataclass(frozen=True)
class SavedTeam:
    """A team whose key was just stored (new, or replacing the old one), and the check
    of it asked for at once: `confirming` or a verdict once it is final."""

    team: TeamRow
    validation: RequestView


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
        encryption_keys: Sequence[bytes] = (),
        allowed_base_urls: Sequence[str] = OFFICIAL_BASE_URLS,
        check_options: CheckOptions | None = None,
        actor: str = DEFAULT_ACTOR,
    ) -> None:
        """`encryption_keys` (OGV_ENCRYPTION_KEYS, newest first) are needed to store keys;
        `allowed_base_urls` (OGV_ALLOWED_BASE_URLS) and `check_options` (where each
        platform is reached, the default probe) to install integrations as the workers
        will check them. `actor` names the client's writes in the audit log."""
        self.sessions: sessionmaker[Session] = session_factory(
            sqlalchemy_url(database_url), pool_size
        )
        self.app = producer_app(broker_url, queue)
        self.requested_by = requested_by
        self._vault = KeyVault(encryption_keys) if encryption_keys else None
        self.allowed_base_urls = list(allowed_base_urls)
        self.options = check_options or CheckOptions()
        self.actor = actor

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        requested_by: Requester = Requester.API,
        actor: str = DEFAULT_ACTOR,
    ) -> ValidationClient:
        """A client for the configured service (`OGV_BROKER_URL`, `OGV_DATABASE_URL`,
        `OGV_NAMESPACE`, `OGV_ENCRYPTION_KEYS`, the platforms' base URLs)."""
        settings = settings or get_settings()
        return cls(
            settings.effective_broker_url,
            settings.effective_database_url,
            queue=settings.namespace,
            requested_by=requested_by,
            pool_size=settings.database_pool_size,
            encryption_keys=settings.fernet_keys(),
            allowed_base_urls=settings.allowed_base_urls,
            check_options=CheckOptions.from_settings(settings),
            actor=actor,
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

    # -- integrations ----------------------------------------------------------------

    def add_integration(
        self,
        organization_id: int,
        account: str,
        *,
        platform: str | None = None,
        base_url: str | None = None,
        probe: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> tuple[IntegrationView, bool]:
        """Install an account for the organization: the integration, and True when it is
        new (installing one again enables it again).

        `platform` is `opsgenie`, `opsgenie-eu` or `jsm-ops` (else named by `base_url`,
        else `opsgenie`); `probe` `authenticate` or `alerts` (else the platform's).
        """
        asked = inventory.fingerprint("integration", account, platform, base_url, probe)
        with self.sessions.begin() as session:
            earlier = self._claim(session, organization_id, idempotency_key, asked)
            if earlier is not None and earlier.resource is not None:
                integration_id = int(earlier.resource.removeprefix("integration:"))
                return self._integration(session, organization_id, integration_id), False
            chosen, url, chosen_probe = inventory.choose_platform(
                platform, base_url, probe, self.options.base_urls
            )
            installed = inventory.install_integration(
                session,
                organization_id=organization_id,
                account_name=account,
                base_url=url,
                allowed_base_urls=self.allowed_base_urls,
                platform=chosen,
                probe=chosen_probe,
            )
            integration_id = installed.integration.id
            if idempotency_key is not None:
                inventory.settle_idempotency_key(
                    session, organization_id, idempotency_key, f"integration:{integration_id}"
                )
            view = self._integration(session, organization_id, integration_id)
            audit.record(
                session,
                actor or self.actor,
                "integration.add",
                organization_id=organization_id,
                target=f"integration:{integration_id}",
                details={
                    "organization_integration_id": view.organization_integration_id,
                    "platform": view.platform,
                    "base_url": view.base_url,
                    "probe": view.probe,
                },
            )
            return view, installed.created

    def list_integrations(
        self,
        organization_id: int,
        *,
        status: IntegrationStatus | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> IntegrationPage:
        """A page of the organization's integrations by id; pass `next_cursor` as `cursor`.

        An organization with none has an empty page.
        """
        after = int(cursor) if cursor is not None else None
        with self.sessions() as session:
            return inventory.integration_page(
                session,
                organization_id,
                status=status,
                limit=limit,
                after=after,
                default_probe=self.options.default_probe,
            )

    def get_integration(self, organization_id: int, integration_id: int) -> IntegrationView | None:
        with self.sessions() as session:
            return inventory.get_integration(
                session, organization_id, integration_id, self.options.default_probe
            )

    def disable_integration(
        self, organization_id: int, integration_id: int, *, actor: str | None = None
    ) -> IntegrationView:
        """Disable it: its teams' checks end `invalid_integration` until it is enabled."""
        return self._set_status(
            organization_id, integration_id, IntegrationStatus.DISABLED, actor or self.actor
        )

    def enable_integration(
        self, organization_id: int, integration_id: int, *, actor: str | None = None
    ) -> IntegrationView:
        return self._set_status(
            organization_id, integration_id, IntegrationStatus.ACTIVE, actor or self.actor
        )

    def remove_integration(
        self, organization_id: int, integration_id: int, *, actor: str | None = None
    ) -> RemovedIntegration:
        """Remove it and its teams (their history stays, as OGV_HISTORY_RETENTION_DAYS says)."""
        with self.sessions.begin() as session:
            removed = inventory.remove_integration(session, organization_id, integration_id)
            audit.record(
                session,
                actor or self.actor,
                "integration.remove",
                organization_id=organization_id,
                target=f"integration:{integration_id}",
                details={"teams": removed.teams},
            )
            return removed

    def _set_status(
        self, organization_id: int, integration_id: int, status: IntegrationStatus, actor: str
    ) -> IntegrationView:
        action = (
            "integration.enable" if status is IntegrationStatus.ACTIVE else "integration.disable"
        )
        with self.sessions.begin() as session:
            inventory.set_integration_status(session, organization_id, integration_id, status)
            audit.record(
                session,
                actor,
                action,
                organization_id=organization_id,
                target=f"integration:{integration_id}",
            )
            return self._integration(session, organization_id, integration_id)

    def _integration(
        self, session: Session, organization_id: int, integration_id: int
    ) -> IntegrationView:
        view = inventory.get_integration(
            session, organization_id, integration_id, self.options.default_probe
        )
        if view is None:  # an idempotent create's integration, removed since
            raise IdempotencyConflict("the integration that Idempotency-Key created is removed")
        return view

    # -- teams -----------------------------------------------------------------------

    def add_team(
        self,
        organization_id: int,
        integration_id: int,
        label: str,
        integration_key: str,
        *,
        wait: float = 0,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> tuple[SavedTeam, bool]:
        """Store a team's key and ask for a check of it at once, waiting up to `wait`
        seconds for its outcome; True when the team is new.

        The same `idempotency_key` gives back the team it created and its latest check
        (the key is not compared: it is never stored but encrypted).
        """
        asked = inventory.fingerprint("team", integration_id, label)

        def write(session: Session) -> Ask | SavedTeam:
            earlier = self._claim(session, organization_id, idempotency_key, asked)
            if earlier is not None:
                return self._replayed_team(session, earlier)
            team = inventory.add_team(
                session,
                organization_id=organization_id,
                integration_id=integration_id,
                label=label,
                integration_key=integration_key,
                vault=self._keys(),
            )
            audit.record(
                session,
                actor or self.actor,
                "team.add",
                organization_id=organization_id,
                target=team.id,
                details={"integration_id": integration_id, "label": label},
            )
            return Ask(organization_id, integration_id, team.id)

        return self._save_key(write, wait, idempotency_key)

    def list_teams(
        self,
        organization_id: int,
        *,
        integration_id: int | None = None,
        status: TeamStatus | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> TeamPage:
        """A page of the organization's teams (of one integration, if given) by id."""
        with self.sessions() as session:
            return teams.list_team_page(
                session,
                organization_id,
                integration_id=integration_id,
                status=status,
                limit=limit,
                cursor=cursor,
            )

    def get_team(self, team_id: str) -> TeamRow | None:
        with self.sessions() as session:
            return teams.get_team(session, team_id)

    def replace_key(
        self, team_id: str, integration_key: str, *, wait: float = 0, actor: str | None = None
    ) -> SavedTeam:
        """Store a new key for the team and ask for a check of it at once, waiting up to
        `wait` seconds for its outcome.

        The team's `key_version` grows and its status is `unknown` until the check
        answers; a check of the old key still under way ends `error` (`key_replaced`)
        and changes nothing.
        """
        vault = self._keys()

        def write(session: Session) -> Ask:
            ask = inventory.replace_key(session, team_id, integration_key, vault)
            audit.record(
                session,
                actor or self.actor,
                "team.replace_key",
                organization_id=ask.organization_id,
                target=ask.team_id,
                details={"integration_id": ask.integration_id},
            )
            return ask

        saved, _ = self._save_key(write, wait)
        return saved

    def remove_team(self, team_id: str, *, actor: str | None = None) -> RemovedTeam:
        """Remove the team and its key (its history stays, as the retention says)."""
        with self.sessions.begin() as session:
            removed = inventory.remove_team(session, team_id)
            audit.record(
                session,
                actor or self.actor,
                "team.remove",
                organization_id=removed.organization_id,
                target=removed.team_id,
                details={"integration_id": removed.integration_id},
            )
            return removed

    def _save_key(
        self,
        write: Callable[[Session], Ask | SavedTeam],
        wait: float,
        idempotency_key: str | None = None,
    ) -> tuple[SavedTeam, bool]:
        """Write a key and record a check of it in one transaction, then publish the check
        (the transactional outbox) and wait up to `wait` seconds for its outcome; with
        whether a key was written (`write` may find it was, by an idempotent create)."""
        published = False
        with self.sessions.begin() as session:
            written = write(session)
            if isinstance(written, SavedTeam):
                team_id, view = written.team.team_id, written.validation
            else:
                request, published = requests.create_request(
                    session,
                    organization_id=written.organization_id,
                    integration_id=written.integration_id,
                    team_id=written.team_id,
                    requested_by=self.requested_by,
                )
                team_id, view = written.team_id, RequestView.of(request)
                if idempotency_key is not None:
                    inventory.settle_idempotency_key(
                        session,
                        written.organization_id,
                        idempotency_key,
                        f"team:{team_id}",
                        request.id,
                    )
        if published:
            publish(self.app, uuid.UUID(view.id))
        if wait > 0 and not view.is_final:
            view = self.wait(view.id, wait) or view
        team = self.get_team(team_id)
        if team is None:
            raise NotFound("no such team: it was removed meanwhile")
        return SavedTeam(team, view), not isinstance(written, SavedTeam)

    def _replayed_team(self, session: Session, earlier: IdempotentCreate) -> SavedTeam:
        team_id = (earlier.resource or "").removeprefix("team:")
        team = teams.get_team(session, team_id)
        check = session.get(ValidationRequest, earlier.request_id) if earlier.request_id else None
        if team is None or check is None:
            raise IdempotencyConflict("the team that Idempotency-Key created is removed")
        return SavedTeam(team, RequestView.of(check))

    def _claim(
        self, session: Session, organization_id: int, key: str | None, asked: str
    ) -> IdempotentCreate | None:
        if key is None:
            return None
        return inventory.claim_idempotency_key(session, organization_id, key, asked)

    def _keys(self) -> KeyVault:
        if self._vault is None:
            raise RuntimeError(
                "this ValidationClient has no encryption_keys (OGV_ENCRYPTION_KEYS); "
                "it cannot store keys"
            )
        return self._vault

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
