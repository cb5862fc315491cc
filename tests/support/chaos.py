"""The chaos harness: a population with a known truth, a running service, faults, a verdict.

A chaos test builds a population of teams whose keys the fake Opsgenie answers in a
known way (`populate`), starts real worker processes and a real `celery beat` on
Redis and PostgreSQL (`Service`), starts a re-validation, injects faults while it
runs, and ends with `verify`: the promises of docs/RELIABILITY.md, checked against
the database. `record` writes the figures to artifacts/chaos.json.

The Redis a chaos test flushes or restarts is a `redis-server` of the test's own
(tests/support/redis_server.py, the `chaos_redis` fixture), and the RabbitMQ it
restarts a node of its own (tests/support/rabbitmq.py): never the machine's.

`verify` only reads; `Verdict.problems()` says which promise broke. The same
function judges the deliberately broken workers of `test_broken_promises.py`,
which must fail it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from models import Requester, Team
from models.crypto import KeyVault
from models.db import session_factory
from tests.support.redis_server import RedisServer
from tests.support.services import ARTIFACTS, NAMESPACE
from tests.support.stacks import FAST_RETRIES
from worker import inventory
from worker.enqueue import REVALIDATE_TASK
from worker.periodic import dispatch
from worker.settings import OFFICIAL_BASE_URLS
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.local import LocalWorker
from worker.testing.scenario import KeyScenario, Scenario
from worker.web.client import producer_app

CHAOS_NAMESPACE = f"{NAMESPACE}-chaos"
FIGURES = ARTIFACTS / "chaos.json"

EXPECTED_STATUS = {
    "valid": "valid",
    "invalid_key": "invalid_key",
    "no_access": "key_lacks_access",
    "unprocessable": "rejected",
    # Transient faults that stop after `times` attempts: the key is good.
    "server_error": "valid",
    "throttle": "valid",
    "hang": "valid",
    "reset": "valid",
}
"""What a key's scenario makes true about it: the status its team must end with."""
JUDGING = frozenset({"invalid_key", "key_lacks_access", "rejected"})
FINAL_STATES = ("done", "failed")

# Fast enough for a 10,000-team run in well under a minute on two cores, and every
# recovery mechanism (sweeper, lease, time limits) on a scale of seconds.
CHAOS_ENV = {
    **FAST_RETRIES,
    "OGV_MAX_ATTEMPTS": "8",
    "OGV_BACKOFF_BASE": "0.1",
    "OGV_BACKOFF_CAP": "0.5",
    "OGV_TOTAL_TIMEOUT": "1",
    "OGV_CONNECT_TIMEOUT": "1",
    "OGV_TASK_SOFT_TIME_LIMIT": "5",
    "OGV_TASK_TIME_LIMIT": "6",
    "OGV_LEASE_SECONDS": "8",
    "OGV_OUTBOX_REPUBLISH_AFTER": "3",
    "OGV_SWEEP_INTERVAL": "2",
    "OGV_REVALIDATE_INTERVAL": "10000000",  # runs are started by the test, not by beat
    "OGV_DISPATCH_WINDOW": "0",
    "OGV_BATCH_SIZE": "100",
    "OGV_BATCH_CONCURRENCY": "100",
    "OGV_ACCOUNT_RATE": "1000",
    "OGV_ACCOUNT_BURST": "20",
    "OGV_MAX_INLINE_WAIT": "1",
}


# --- the population --------------------------------------------------------------------


Mix = Callable[[random.Random, int], KeyScenario]
"""A key's scenario, from a seeded random source and the key's account number."""


def truthful(rng: random.Random, account: int) -> KeyScenario:
    """Mostly good keys, some dead or restricted ones, every answer final at once."""
    roll = rng.random()
    behaviour = (
        "invalid_key"
        if roll < 0.05
        else "no_access"
        if roll < 0.10
        else "unprocessable"
        if roll < 0.15
        else "valid"
    )
    return KeyScenario(behaviour, latency_ms=rng.randint(0, 15))  # type: ignore[arg-type]


THROTTLED_ACCOUNTS = 4
"""In a storm, every key of the first accounts is throttled once: bursts of 429."""


def storm(rng: random.Random, account: int) -> KeyScenario:
    """The issue's fault storm, key by key: each fault stops after `times` attempts."""
    latency = rng.randint(0, 15)
    if account < THROTTLED_ACCOUNTS:
        return KeyScenario("throttle", times=1, period_seconds=1, latency_ms=latency)
    roll = rng.random()
    if roll < 0.30:
        status = rng.choice((500, 502, 503, 504))
        return KeyScenario("server_error", times=rng.randint(1, 2), status=status)
    if roll < 0.40:
        return KeyScenario("hang", times=1)
    if roll < 0.45:
        return KeyScenario("reset", times=1)
    if roll < 0.50:
        return KeyScenario("throttle", times=1, period_seconds=1, latency_ms=latency)
    return truthful(rng, account)


@dataclass
class Population:
    """One organization's teams and what each one's key truly is."""

    org: int
    expected: dict[str, str]
    """Team id → the status it must end with."""
    scenarios: dict[str, KeyScenario]
    """Team id → its key's scenario at the fake."""
    keys: dict[str, str]
    """Team id → its integration key (the fake's name for it)."""
    integrations: dict[str, int]
    """Team id → the id of its Integration (account)."""

    @property
    def size(self) -> int:
        return len(self.expected)


def populate(
    database_url: str,
    fernet_key: str,
    fake: FakeOpsgenie,
    *,
    accounts: int,
    per_account: int,
    mix: Mix = truthful,
    seed: int = 6,
    hang_seconds: float = 3.0,
    latency_ms: int = 5,
) -> Population:
    """Insert `accounts * per_account` teams in bulk, one key each, and serve their truth."""
    rng = random.Random(seed)
    org = 7_000_000 + uuid.uuid4().int % 1_000_000 * 10
    vault = KeyVault([fernet_key.encode()])
    keys: dict[str, KeyScenario] = {}
    expected: dict[str, str] = {}
    scenarios: dict[str, KeyScenario] = {}
    team_keys: dict[str, str] = {}
    integrations: dict[str, int] = {}
    with session_factory(database_url).begin() as session:
        rows = []
        for a in range(accounts):
            account = f"chaos-{org}-{a}"
            integration, link = inventory.add_integration(
                session,
                organization_id=org,
                account_name=account,
                base_url=fake.url,
                allowed_base_urls=[fake.url],
            )
            for t in range(per_account):
                label = f"team-{t:05d}"
                key = f"key-{uuid.uuid4()}"
                scenario = mix(rng, a)
                scenario = KeyScenario(**{**scenario.to_dict(), "account": account})
                team_id = Team.make_id(link.id, label)
                keys[key], scenarios[team_id] = scenario, scenario
                team_keys[team_id], integrations[team_id] = key, integration.id
                expected[team_id] = EXPECTED_STATUS[scenario.behaviour]
                rows.append(
                    {
                        "id": team_id,
                        "organization_integration_id": link.id,
                        "label": label,
                        "encrypted_key": vault.encrypt(key),
                    }
                )
        session.execute(insert(Team), rows)
    fake.set_scenario(Scenario(keys=keys, latency_ms=latency_ms, hang_seconds=hang_seconds))
    return Population(org, expected, scenarios, team_keys, integrations)


# --- the service -----------------------------------------------------------------------


def chaos_env(
    data_dir: Path,
    fake: FakeOpsgenie,
    database_url: str,
    fernet_key: str,
    redis_url: str,
    **extra: str,
) -> dict[str, str]:
    """The service's environment on the test's Redis (`redis_url`); `extra` overrides it
    (OGV_BROKER_URL=amqp://... with OGV_REDIS_URL for the RabbitMQ scenario)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env.update(CHAOS_ENV)
    env.update(
        OGV_DATA_DIR=str(data_dir),
        OGV_NAMESPACE=CHAOS_NAMESPACE,
        OGV_DATABASE_URL=database_url,
        OGV_BROKER_URL=redis_url,
        OGV_ENCRYPTION_KEYS=fernet_key,
        OGV_ALLOWED_BASE_URLS=",".join([*OFFICIAL_BASE_URLS, fake.url]),
        OGV_METRICS_PORT="0",
        OGV_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


class Beat:
    """A real `celery -A worker beat`: the outbox sweeper's clock."""

    def __init__(self, env: dict[str, str], log_path: Path, app: str = "worker") -> None:
        self.env, self.log_path, self.app = env, log_path, app
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Beat:
        schedule = self.log_path.with_suffix(".schedule")
        argv = [sys.executable, "-m", "celery", "-A", self.app, "beat", "--loglevel", "INFO"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--schedule", str(schedule)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Service:
    """Worker processes and a beat on one environment; everything stopped in `close`."""

    env: dict[str, str]
    log_dir: Path
    app: str = "worker"
    workers: list[LocalWorker] = field(default_factory=list)
    beat: Beat | None = None

    def start_worker(self, concurrency: int = 2, name: str = "chaos") -> LocalWorker:
        log = self.log_dir / f"{name}-{len(self.workers)}.log"
        worker = LocalWorker(self.env, log, pool="prefork", concurrency=concurrency, name=name)
        worker.argv[worker.argv.index("-A") + 1] = self.app
        self.workers.append(worker.start())
        return worker

    def restart(self, worker: LocalWorker) -> LocalWorker:
        worker.stop()
        return worker.start()

    def start_beat(self) -> Beat:
        self.beat = Beat(self.env, self.log_dir / "beat.log").start()
        return self.beat

    def supervise(self, on_restart: Callable[[LocalWorker], None]) -> None:
        """Restart any worker whose process exits, as systemd or Kubernetes would.

        Kombu's Redis transport can end a worker with "Unrecoverable error" when the
        connection drops mid-read; production runs workers under a supervisor.
        """
        self._supervising = threading.Event()

        def watch() -> None:
            while not self._supervising.wait(0.5):
                for worker in self.workers:
                    if worker.process is not None and worker.process.poll() is not None:
                        worker.start()
                        on_restart(worker)

        threading.Thread(target=watch, daemon=True).start()

    def close(self) -> None:
        if getattr(self, "_supervising", None) is not None:
            self._supervising.set()
        for worker in self.workers:
            worker.kill()  # a chaos test's end needs no warm shutdown
        if self.beat is not None:
            self.beat.stop()


@contextmanager
def running_service(env: dict[str, str], name: str, app: str = "worker") -> Iterator[Service]:
    log_dir = ARTIFACTS / "logs" / f"chaos-{name}-{uuid.uuid4().hex[:8]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    service = Service(env, log_dir, app)
    try:
        yield service
    finally:
        service.close()


def start_run(env: dict[str, str], population: Population) -> uuid.UUID:
    """Start a re-validation of the population the way beat does: an `ogv.revalidate`."""
    sessions = session_factory(env["OGV_DATABASE_URL"])
    run_id = dispatch.start_run(sessions, Requester.BEAT, population.org)
    app = producer_app(env["OGV_BROKER_URL"], env["OGV_NAMESPACE"])
    try:
        app.send_task(
            REVALIDATE_TASK, kwargs={"organization_id": population.org, "run_id": str(run_id)}
        )
    finally:
        app.close()
    return run_id


WORKERS, CONCURRENCY = 2, 4
"""The scenarios' service: two prefork workers of four processes each."""
FINISH_TIMEOUT = 200.0


@dataclass
class Ground:
    """What every scenario stands on: the database, its encryption key, the fake, and a
    Redis server of the test's own."""

    database_url: str
    fernet_key: str
    fake: FakeOpsgenie
    data_dir: Path
    redis: RedisServer


def at_progress(ground: Ground, population: Population, fraction: float) -> None:
    """Wait until `fraction` of the run's requests are final: the fault lands mid-run."""
    wait_for_finished(
        ground.database_url, population.org, int(population.size * fraction), FINISH_TIMEOUT
    )


# --- watching a run --------------------------------------------------------------------


def _query(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Read with a retry: the chaos may have just killed this process's connections."""
    for attempt in range(5):
        try:
            with session_factory(database_url)() as session:
                return list(session.execute(text(sql), params).all())
        except DBAPIError:
            if attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def states(database_url: str, org: int) -> Counter[str]:
    rows = _query(
        database_url,
        "SELECT state, count(*) FROM validation_requests WHERE organization_id = :org "
        "GROUP BY state",
        org=org,
    )
    return Counter({state: count for state, count in rows})


def finished(database_url: str, org: int) -> int:
    counts = states(database_url, org)
    return sum(counts[s] for s in FINAL_STATES)


def wait_for_finished(database_url: str, org: int, count: int, timeout: float) -> float:
    """Poll until `count` requests of the org are final; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        done = finished(database_url, org)
        if done >= count:
            return now
        if now >= deadline:
            raise TimeoutError(
                f"{done} of {count} requests final after {timeout}s: "
                f"{dict(states(database_url, org))}"
            )
        time.sleep(0.25)


def wait_for_running(database_url: str, org: int, timeout: float = 30) -> None:
    """Poll until a request of the org is running: a worker is mid-request."""
    deadline = time.monotonic() + timeout
    while states(database_url, org)["running"] < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no request running after {timeout}s")
        time.sleep(0.02)


def wait_for_dispatch(database_url: str, run_id: uuid.UUID, timeout: float = 60) -> int:
    """Poll until the run's dispatcher recorded every request; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _query(
            database_url,
            "SELECT total FROM validation_runs WHERE id = :id AND dispatched_at IS NOT NULL",
            id=run_id,
        )
        if rows:
            return int(rows[0][0])
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} not dispatched after {timeout}s")


# --- faults ----------------------------------------------------------------------------


def terminate_connections(database_url: str) -> int:
    """Kill every connection to the test database (the workers', and ours): pg_terminate."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.database,),
        ).fetchall()
    return sum(1 for (killed,) in rows if killed)


def kill_pool_children(worker: LocalWorker) -> list[int]:
    """SIGKILL the prefork children of `worker`, whichever runs a task; their pids.

    The main process survives, sees its children die, and starts new ones.
    """
    children = worker.child_pids()
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    return children


# --- the verdict -----------------------------------------------------------------------


@dataclass
class Verdict:
    """What a run left in the database, measured against the population's truth."""

    teams: int
    requests: int
    final: int
    not_final: int
    lost: int
    """Teams without a final request."""
    extra_requests: int
    """Requests beyond one per team (a team's check recorded twice)."""
    wrong_status: int
    false_invalidations: int
    """Good keys left invalid_key, key_lacks_access or rejected."""
    duplicate_transitions: int
    """History rows repeating a (team, old, new) transition."""
    bad_history: int
    """Teams whose history is not exactly one unknown → (their true status) row."""
    outcomes: dict[str, int]
    examples: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        checks = {
            "requests not final": self.not_final,
            "teams without a final request (lost)": self.lost,
            "extra requests": self.extra_requests,
            "teams with a wrong status": self.wrong_status,
            "false invalidations": self.false_invalidations,
            "duplicate transitions": self.duplicate_transitions,
            "teams with a wrong history": self.bad_history,
        }
        found = [f"{count} {what}" for what, count in checks.items() if count]
        return [*found, *self.examples[:5]] if found else []


def verify(database_url: str, population: Population) -> Verdict:
    """Check every promise for the population's teams; read-only."""
    org = population.org
    requests = _query(
        database_url,
        "SELECT team_id, state, outcome FROM validation_requests WHERE organization_id = :org",
        org=org,
    )
    teams = dict(
        _query(
            database_url,
            "SELECT t.id, t.status FROM teams t JOIN organization_integrations oi "
            "ON t.organization_integration_id = oi.id WHERE oi.organization_id = :org",
            org=org,
        )
    )
    history = _query(
        database_url,
        "SELECT c.team_id, c.old_status, c.new_status FROM team_status_changes c "
        "JOIN teams t ON c.team_id = t.id JOIN organization_integrations oi "
        "ON t.organization_integration_id = oi.id WHERE oi.organization_id = :org",
        org=org,
    )
    per_team = Counter(team for team, _, _ in requests)
    final_teams = {team for team, state, _ in requests if state in FINAL_STATES}
    transitions = Counter((team, old, new) for team, old, new in history)
    by_team: dict[str, list[tuple[str, str]]] = {}
    for team, old, new in history:
        by_team.setdefault(team, []).append((old, new))
    examples: list[str] = []
    wrong = false_invalid = bad_history = 0
    for team, truth in population.expected.items():
        status = teams.get(team)
        if status != truth:
            wrong += 1
            false_invalid += truth == "valid" and status in JUDGING
            examples.append(f"{team}: {status}, truly {truth} ({population.scenarios[team]})")
        if by_team.get(team) != [("unknown", truth)]:
            bad_history += 1
            examples.append(f"{team}: history {by_team.get(team)}, truly unknown → {truth}")
    return Verdict(
        teams=population.size,
        requests=len(requests),
        final=sum(1 for _, state, _ in requests if state in FINAL_STATES),
        not_final=sum(1 for _, state, _ in requests if state not in FINAL_STATES),
        lost=sum(1 for team in population.expected if team not in final_teams),
        extra_requests=sum(count - 1 for count in per_team.values() if count > 1),
        wrong_status=wrong,
        false_invalidations=false_invalid,
        duplicate_transitions=sum(count - 1 for count in transitions.values() if count > 1),
        bad_history=bad_history,
        outcomes=dict(Counter(outcome or "none" for _, _, outcome in requests)),
        examples=examples,
    )


KEY_PATTERN = re.compile(r"key-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def leaked_keys(log_dir: Path, population: Population) -> int:
    """How many of the population's keys appear in the service's logs (must be none)."""
    keys = set(population.keys.values())
    seen: set[str] = set()
    for log in log_dir.glob("*.log"):
        seen.update(KEY_PATTERN.findall(log.read_text(errors="replace")))
    return len(seen & keys)


def assert_promises_kept(verdict: Verdict) -> None:
    problems = verdict.problems()
    assert not problems, "promises broken: " + "; ".join(problems)


# --- figures ---------------------------------------------------------------------------


@dataclass
class Faults:
    """The faults a scenario injected, and when (seconds since the run started)."""

    injected: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0
    """When the last fault was injected (monotonic); 0 if none was."""

    def note(self, kind: str, **details: Any) -> None:
        at = time.monotonic()
        self.injected.append({"kind": kind, "at_s": round(at - self.started, 2), **details})
        self.last = at

    def counts(self) -> dict[str, int]:
        return dict(Counter(f["kind"] for f in self.injected))


def fake_figures(fake: FakeOpsgenie, population: Population) -> dict[str, Any]:
    """The calls the fake answered, by kind of answer: the faults it served."""
    calls = fake.requests()
    statuses = Counter(call.status for call in calls)
    per_key = Counter(call.key for call in calls)
    hung = sum(
        min(per_key[key], scenario.times or 0)
        for key, scenario in fake.scenario.keys.items()
        if scenario.behaviour == "hang"
    )
    return {
        "calls": len(calls),
        "answered_5xx": sum(n for s, n in statuses.items() if s is not None and s >= 500),
        "answered_429": statuses[429],
        "resets": statuses[None],
        "hangs": hung,
    }


def record(scenario: str, figures: dict[str, Any]) -> None:
    """Merge one scenario's figures into artifacts/chaos.json."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        existing = {}
    existing[scenario] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    FIGURES.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    # Shown with `pytest -s`; the file is the record.
    brief = {k: v for k, v in figures.items() if k != "fault_log"}
    sys.stderr.write(f"\nchaos {scenario}: {json.dumps(brief, sort_keys=True)}\n")


def figures_of(
    verdict: Verdict, faults: Faults, recovered_at: float, fake: FakeOpsgenie, pop: Population
) -> dict[str, Any]:
    return {
        "teams": verdict.teams,
        "requests": verdict.requests,
        "final": verdict.final,
        "lost": verdict.lost + verdict.not_final,
        "false_invalidations": verdict.false_invalidations,
        "duplicate_transitions": verdict.duplicate_transitions,
        "wrong_status": verdict.wrong_status,
        "outcomes": verdict.outcomes,
        "faults": faults.counts(),
        "fault_log": faults.injected,
        "opsgenie": fake_figures(fake, pop),
        "run_seconds": round(recovered_at - faults.started, 1),
        "recovery_seconds": round(recovered_at - faults.last, 1) if faults.last else None,
    }
