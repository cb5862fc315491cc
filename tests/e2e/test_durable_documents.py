"""A base URL's document survives the loss of its message (issue 25).

The decision that a base URL turned unavailable is committed, with its document,
and then its message is never published: first as a real crash (a worker SIGKILLed
while its publish waits behind a cut network), then decided in this process and
never announced. The outbox sweeper, run by a real worker, sends it again: the
receiver, a real local HTTP server, gets the document once, under the same
Idempotency-Key however many sweeps run; likewise for a guard trip recorded by a
batch's write.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import select

from models import BaseUrlEvent
from models.db import session_factory
from tests.support.services import ARTIFACTS
from tests.support.stacks import Stack, install, ok_json, open_stack, service_env, wait_until
from tests.support.tcp_proxy import TcpProxy
from tests.support.webhooks import WebhookReceiver as Receiver
from worker import webhooks
from worker.checks import platform_health
from worker.checks.guard import DatabaseWindows, Entry, Thresholds
from worker.checks.opsgenie import UnrecognisedAnswer
from worker.checks.records import record_trip
from worker.checks.rules import Target
from worker.enqueue import SWEEP_TASK
from worker.periodic import sunset
from worker.platforms import OPSGENIE
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario, Scenario
from worker.web.client import producer_app

pytestmark = [pytest.mark.timeout(180)]

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
    sweep_on(configured(stack).effective_broker_url, stack, times)


def sweep_on(broker_url: str, stack: Stack, times: int) -> None:
    app = producer_app(broker_url, stack.env["OGV_NAMESPACE"])
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


LATENCY_MS = 3_000
"""How long the crash test's fake takes to answer: the window in which to cut the network."""


@pytest.fixture
def slow_fake() -> Iterator[FakeOpsgenie]:
    """A fake of this test's own (its base URLs nobody else's), slow to answer."""
    with FakeOpsgenie(Scenario(latency_ms=LATENCY_MS)) as fake:
        yield fake


@pytest.fixture
def cut_broker(redis_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """The run's Redis behind a proxy that the test can cut; the proxied URL."""
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    with TcpProxy(parts.hostname, parts.port) as proxy:
        yield proxy, urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))


def test_a_worker_killed_before_its_platform_document_is_sent_leaves_it_to_the_sweeper(
    tmp_path: Path,
    postgres_url: str,
    fernet_key: str,
    redis_url: str,
    slow_fake: FakeOpsgenie,
    cut_broker: tuple[TcpProxy, str],
    receiver: Receiver,
) -> None:
    proxy, broker_url = cut_broker
    env = service_env(
        tmp_path,
        slow_fake,
        OGV_DATABASE_URL=postgres_url,
        OGV_ENCRYPTION_KEYS=fernet_key,
        OGV_BROKER_URL=broker_url,  # only the broker is behind the cut
        OGV_REDIS_URL=redis_url,
        OGV_TOTAL_TIMEOUT=str(LATENCY_MS / 1000 + 5),
        OGV_PLATFORM_MIN_ANSWERS="5",
        OGV_STATUS_WEBHOOK_URL=receiver.url,
        OGV_WEBHOOK_SECRET=SECRET,
        OGV_OUTBOX_REPUBLISH_AFTER="0.5",
    )
    stack = Stack("crash", env, ARTIFACTS / "logs" / f"worker-crash-{uuid.uuid4().hex[:8]}.log")
    worker = stack.start_worker(pool="prefork", concurrency=2)
    try:
        installed = install(stack, slow_fake, {f"t{i}": KeyScenario() for i in range(8)})
        base_url = slow_fake.url
        sessions = session_factory(postgres_url)

        # Every call to the host answers an HTML 404, three seconds late: the answers
        # that make the base URL unavailable, once they arrive.
        slow_fake.set_host("opsgenie", "html_404")
        run = stack.ogv("revalidate", "--org", str(installed["org"]), "--no-wait")
        assert run.returncode == 0, run.stderr
        wait_until(lambda: slow_fake.host_calls("opsgenie") >= 8, timeout=60)
        proxy.hold()  # the calls are out; nothing the worker sends the broker arrives now

        def decided() -> BaseUrlEvent | None:
            with sessions() as session:
                return session.scalar(select(BaseUrlEvent).where(BaseUrlEvent.base_url == base_url))

        # The decision commits; its publish waits for the broker's answer that never comes.
        wait_until(decided, timeout=LATENCY_MS / 1000 + 30)
        time.sleep(0.5)
        worker.kill()  # SIGKILL, the whole process group: between the decision and the send
        event = decided()
        assert event is not None and event.notified_at is None
        assert receiver.about(base_url) == []
    finally:
        proxy.sever()  # what the dead worker sent is lost with its connections
        slow_fake.set_scenario(Scenario(hosts={"opsgenie": "html_404"}))
        stack.stop()

    # A new worker, and beat's sweeps: the document goes out once, under the row's id.
    stack.start_worker(pool="prefork", concurrency=2)
    try:
        time.sleep(0.6)  # past OGV_OUTBOX_REPUBLISH_AFTER
        sweep_on(broker_url, stack, 3)
        wait_until(lambda: receiver.about(base_url), timeout=30)
        time.sleep(1.0)
        [(document, headers)] = receiver.about(base_url)
        with sessions() as session:
            row = session.get(BaseUrlEvent, event.id)
            assert row is not None and row.notified_at is not None and row.notify_attempts == 1
        assert document["event"] == "platform.unavailable"
        assert headers["idempotency-key"] == headers["webhook-id"] == row.key
        [raw] = [r for r in receiver.raw if base_url.encode() in r]
        assert webhooks.verify(SECRET, headers, raw) == document
    finally:
        stack.stop()


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


def test_a_lost_sunset_notice_is_sent_again_signed(
    stack: Stack, fake: FakeOpsgenie, receiver: Receiver
) -> None:
    installed = install(stack, fake, {"ops": KeyScenario()})
    migrated = (datetime.now(UTC).date() - timedelta(days=100)).isoformat()  # 20 days left
    integration = str(installed["integration"])
    ok_json(stack, "integration", "update", integration, "--migrated-on", migrated)
    sessions = session_factory(configured(stack).effective_database_url)
    # Recorded, and its message never published (the default announces nothing).
    [notice_id] = sunset.announce(sessions, lambda notice_id: None)

    time.sleep(0.6)
    sweep(stack, 3)

    def received() -> list[int]:
        return [i for i, d in enumerate(receiver.received) if d.get("notice_id") == notice_id]

    wait_until(received, timeout=20)
    time.sleep(1.0)
    [index] = received()
    document, headers = receiver.received[index], receiver.headers[index]
    assert document["event"] == "sunset.approaching" and document["days_left"] == 20
    assert headers["webhook-id"] == headers["idempotency-key"] == sunset.idempotency_key(notice_id)
    assert webhooks.verify(SECRET, headers, receiver.raw[index]) == document
