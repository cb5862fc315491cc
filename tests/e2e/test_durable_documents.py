"""A base URL's document survives the loss of its message (issue 25).

The decision that a base URL turned unavailable is committed, with its document,
and then its message is never published (the process that decided it died right
there). The outbox sweeper, run by a real worker on a database of its own (the
embedded stack: nobody else's stranded requests queue before it), sends it
again: the receiver, a real local HTTP server, gets the document once, under the
same Idempotency-Key however many sweeps run; likewise for a guard trip recorded
by a batch's write.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from models import BaseUrlEvent
from models.db import session_factory
from tests.support.stacks import Stack, open_stack, wait_until
from tests.support.webhooks import WebhookReceiver as Receiver
from worker import webhooks
from worker.checks import platform_health
from worker.checks.guard import DatabaseWindows, Entry, Thresholds
from worker.checks.opsgenie import UnrecognisedAnswer
from worker.checks.records import record_trip
from worker.checks.rules import Target
from worker.enqueue import SWEEP_TASK
from worker.platforms import OPSGENIE
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.web.client import producer_app

pytestmark = [pytest.mark.timeout(120)]

SECRET = webhooks.new_secret()
"""The stack's OGV_WEBHOOK_SECRET: each delivery is signed under its `webhook-id`."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    receiver: Receiver,
) -> Iterator[Stack]:
    running = open_stack(
        "embedded",
        request,
        tmp_path_factory,
        fake,
        OGV_STATUS_WEBHOOK_URL=receiver.url,
        OGV_WEBHOOK_SECRET=SECRET,
        OGV_OUTBOX_REPUBLISH_AFTER="0.5",
    )
    yield running
    running.stop()


def configured(stack: Stack) -> Settings:
    """The stack's settings: its database and broker live in its data directory."""
    return Settings(data_dir=Path(stack.env["OGV_DATA_DIR"]), database_url="", broker_url="")


def sweep(stack: Stack, times: int) -> None:
    """Publish beat's sweep `times` times, a second apart: more than one delivery
    would have happened by the end."""
    app = producer_app(configured(stack).effective_broker_url, stack.env["OGV_NAMESPACE"])
    for _ in range(times):
        app.send_task(SWEEP_TASK)
        time.sleep(1.0)


def target(base_url: str) -> Target:
    return Target(
        team_id="1-ops",
        label="ops",
        account="acme",
        integration_id=1,
        base_url=base_url,
        key="never-sent",
        key_version=1,
        platform=OPSGENIE,
        probe="alerts",
        organization_id=1,
    )


def test_a_lost_platform_document_is_sent_again_once(stack: Stack, receiver: Receiver) -> None:
    base_url = f"https://retired-{uuid.uuid4().hex[:8]}.example.com/"
    sessions = session_factory(configured(stack).effective_database_url)
    answered = [(target(base_url), UnrecognisedAnswer("a 410", 410))] * 25
    thresholds = platform_health.Thresholds(timedelta(seconds=300), min_answers=20)
    # Decided and committed; the publish never happens (the default announces nothing).
    [transition] = platform_health.observe(sessions, answered, thresholds)
    assert transition.event_id is not None
    assert receiver.about(base_url) == []

    time.sleep(0.6)  # past OGV_OUTBOX_REPUBLISH_AFTER
    sweep(stack, 3)
    wait_until(lambda: receiver.about(base_url), timeout=20)
    time.sleep(1.0)

    with sessions() as session:
        row = session.get(BaseUrlEvent, transition.event_id)
        assert row is not None and row.notified_at is not None and row.notify_attempts == 1
    [(document, headers)] = receiver.about(base_url)
    assert document == transition.document()
    assert headers["idempotency-key"] == row.key == platform_health.idempotency_key(document)
    assert headers["webhook-id"] == row.key  # signed, Standard Webhooks, under the same id
    [raw] = [r for r in receiver.raw if base_url.encode() in r]
    assert webhooks.verify(SECRET, headers, raw) == document
    assert not any(b"never-sent" in raw for raw in receiver.raw)


def test_a_guard_trip_is_recorded_once_and_its_lost_document_sent_again(
    stack: Stack, receiver: Receiver
) -> None:
    base_url = f"https://lying-{uuid.uuid4().hex[:8]}.example.com/"
    sessions = session_factory(configured(stack).effective_database_url)
    thresholds = Thresholds(window=600.0, threshold=0.2, min_changes=3)
    # Four changes from three organizations: the third organization's trips the guard.
    entries = [Entry(str(uuid.uuid4()), org, change=True) for org in (1, 2, 3, 1)]
    with sessions.begin() as session:
        connection = session.connection()
        admission = DatabaseWindows().admit(connection, base_url, thresholds, entries)
        assert admission.trip is not None
        trip = record_trip(connection, admission.trip)
        # The same trip decided again (a redone write) is not recorded again.
        assert record_trip(connection, admission.trip).event_id is None
    assert trip.event_id is not None

    time.sleep(0.6)
    sweep(stack, 3)
    wait_until(lambda: receiver.about(base_url), timeout=20)
    time.sleep(1.0)

    with sessions() as session:
        keys = session.scalars(select(BaseUrlEvent.key).where(BaseUrlEvent.base_url == base_url))
        assert list(keys) == [trip.key]
    [(document, headers)] = receiver.about(base_url)
    assert document == trip.document()
    assert headers["idempotency-key"] == headers["webhook-id"] == trip.key
