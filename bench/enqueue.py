"""Enqueue benchmark: how many checks the HTTP API accepts, and how long from POST to outcome.

    python bench/enqueue.py                       # 200 req/s for 20 s, fake Opsgenie at 50 ms
    python bench/enqueue.py --rate 100 --duration 10 --workers 2 --concurrency 32

Everything is real and on this machine: a fresh PostgreSQL database, Redis, the
fake Opsgenie (`ogv fake-opsgenie`, its own process) answering every key `valid`
after `--latency-ms`, `ogv api` (its own process) and Celery workers (`--pool
threads`). Each POST is for a distinct team in its own Opsgenie account, so the
per-account pacing never delays a call. The load is open-loop: request i is sent
at start + i/rate whatever happened to the earlier ones.

Measured:
- accepted: 2xx answers per second of sending, and the API's own answer time;
- POST to outcome written: the request row's `finished_at` minus the moment the
  POST was sent (same clock), so no polling interval is added;
- the floor: a bare aiohttp call to the fake, before the load and during it.

Prints a table and writes bench/results/enqueue.json. Flushes the Redis database
it is given (default 12; the tests use 13). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench.common import Sampler, cpu_used, database, free_port, ogv, serving
from models import Integration, OrganizationIntegration, Team, ValidationRequest
from models.crypto import KeyVault
from models.db import session_factory
from worker.settings import OFFICIAL_BASE_URLS
from worker.testing.local import LocalWorker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "enqueue.json"
LOGS = ROOT / "artifacts" / "bench-enqueue"  # the processes' logs, kept for a look
ORG = 1
WARMUP = 50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="offered POSTs per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--latency-ms", type=int, default=50, help="the fake's latency")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (0: the API alone)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker")
    parser.add_argument("--pool", default="threads", help="the workers' Celery pool")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "OGV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/x"
        ),
        help="a server where a throwaway database is created (the database name is ignored)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="flushed first")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "max": round(max(values, default=float("nan")) * 1000, 1),
        "mean": round(statistics.fmean(values) * 1000, 1) if values else float("nan"),
    }


# -- the service under test --------------------------------------------------------------


def install_teams(url: str, fernet_key: str, fake_url: str, count: int) -> list[str]:
    """`count` teams, each in its own Opsgenie account; returns their ids."""
    vault = KeyVault([fernet_key.encode()])
    with session_factory(url).begin() as session:
        for i in range(1, count + 1):
            session.add(
                Integration(id=i, organization_id=ORG, account_name=f"bench-{i}", base_url=fake_url)
            )
            session.add(OrganizationIntegration(id=i, organization_id=ORG, integration_id=i))
            key = f"bench-key-{i}-{secrets.token_hex(8)}"
            session.add(
                Team(
                    id=f"{i}-t",
                    organization_integration_id=i,
                    label="t",
                    encrypted_key=vault.encrypt(key),
                )
            )
    return [f"{i}-t" for i in range(1, count + 1)]


# -- load --------------------------------------------------------------------------------


@dataclass
class Sent:
    integration_id: int
    team_id: str
    sent_at: float  # wall clock, to compare with the row's finished_at
    status: int = 0
    answered_in: float = 0.0
    request_id: str | None = None


async def floor_calls(fake_url: str, count: int, spacing: float) -> list[float]:
    """A bare aiohttp call to the fake, `count` times: the latency nothing can beat."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            started = time.perf_counter()
            async with session.post(
                f"{fake_url}v2/integrations/authenticate",
                json={"type": "sentry"},
                headers={"Authorization": f"GenieKey floor-{i}", "Accept": "application/json"},
            ) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(spacing)
    return latencies


async def post_one(session: aiohttp.ClientSession, api_url: str, sent: Sent) -> None:
    body = {"organization_id": ORG, "integration_id": sent.integration_id, "team_id": sent.team_id}
    started = time.perf_counter()
    sent.sent_at = time.time()
    try:
        async with session.post(f"{api_url}/v1/validations", json=body) as response:
            payload = await response.json()
            sent.status = response.status
            sent.request_id = payload.get("id")
    except aiohttp.ClientError:
        sent.status = -1
    sent.answered_in = time.perf_counter() - started


async def offer(api_url: str, token: str, plan: list[Sent], rate: float) -> float:
    """Send `plan` open-loop at `rate` per second; returns the seconds it took to send."""
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i, sent in enumerate(plan):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post_one(session, api_url, sent)))
        sending = loop.time() - start
        await asyncio.gather(*tasks)
    return sending


async def load_with_floor(
    api_url: str, token: str, fake_url: str, plan: list[Sent], rate: float
) -> tuple[float, list[float]]:
    duration = len(plan) / rate
    offered = asyncio.create_task(offer(api_url, token, plan, rate))
    floor = asyncio.create_task(floor_calls(fake_url, max(1, int(duration / 0.2)), 0.15))
    return await offered, await floor


def wait_until_final(url: str, ids: list[str], timeout: float) -> list[ValidationRequest]:
    wanted = [uuid.UUID(i) for i in ids]
    deadline = time.monotonic() + timeout
    while True:
        with session_factory(url)() as session:
            rows = list(
                session.scalars(select(ValidationRequest).where(ValidationRequest.id.in_(wanted)))
            )
        if all(row.state.is_final for row in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


# -- the run -----------------------------------------------------------------------------


@dataclass
class Services:
    api_url: str
    token: str
    fake_url: str
    database_url: str
    logs: Path
    sampler: Sampler
    teams: list[str] = field(default_factory=list)
    workers: list[LocalWorker] = field(default_factory=list)


@contextmanager
def services(args: argparse.Namespace, stack: ExitStack) -> Iterator[Services]:
    redis.Redis.from_url(args.redis).flushdb()
    url = stack.enter_context(database(args.postgres, "ogv_bench_enqueue"))
    logs = LOGS / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    logs.mkdir(parents=True)
    fake_port, api_port = free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}/"
    scenario = logs / "scenario.json"
    scenario.write_text(json.dumps({"default": "valid", "latency_ms": args.latency_ms}))
    token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OGV_")}
    env.update(
        OGV_DATA_DIR=str(logs / "data"),
        OGV_DATABASE_URL=url,
        OGV_BROKER_URL=args.redis,
        OGV_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        OGV_ALLOWED_BASE_URLS=",".join([*OFFICIAL_BASE_URLS, fake_url]),
        OGV_API_TOKEN=token,
        OGV_LOG_FORMAT="json",
    )
    fake_argv = [ogv(), "fake-opsgenie", "--port", str(fake_port), "--scenario", str(scenario)]
    sampler = stack.enter_context(Sampler())
    sampler.watch(os.getpid(), "load generator")
    fake = stack.enter_context(serving(fake_argv, env, logs / "fake.log", fake_port))
    sampler.watch(fake.pid, "fake")
    sampler.watch_matching(make_url(url).database or "", "postgres backends")
    sampler.watch_matching("redis-server", "redis-server")
    running = Services(f"http://127.0.0.1:{api_port}", token, fake_url, url, logs, sampler)
    running.teams = install_teams(url, env["OGV_ENCRYPTION_KEYS"], fake_url, teams_needed(args))
    for _ in range(args.workers):
        worker = LocalWorker(env, logs / "worker.log", pool=args.pool, concurrency=args.concurrency)
        running.workers.append(stack.enter_context(worker))
        sampler.watch(worker.pid, f"worker {len(running.workers)}")
    api_argv = [ogv(), "api", "--port", str(api_port)]
    api = stack.enter_context(serving(api_argv, env, logs / "api.log", api_port))
    sampler.watch(api.pid, "api")
    yield running


def teams_needed(args: argparse.Namespace) -> int:
    return WARMUP + round(float(args.rate) * float(args.duration))


def plan_for(teams: list[str]) -> list[Sent]:
    return [Sent(int(team.split("-")[0]), team, 0.0) for team in teams]


def measure(args: argparse.Namespace, running: Services) -> dict[str, Any]:
    teams = running.teams
    floor_idle = asyncio.run(floor_calls(running.fake_url, 100, 0.01))
    warmup = plan_for(teams[:WARMUP])
    asyncio.run(offer(running.api_url, running.token, warmup, min(args.rate, 50)))
    plan = plan_for(teams[WARMUP:])
    cpu_before = running.sampler.cpu_s()
    sending, floor_loaded = asyncio.run(
        load_with_floor(running.api_url, running.token, running.fake_url, plan, args.rate)
    )
    accepted = [s for s in plan if s.status in (200, 202)]
    ids = [s.request_id for s in accepted if s.request_id]
    # --workers 0 measures the API alone: nothing consumes, so there is no outcome to wait for.
    timeout = 120 if args.workers else 0
    rows = {str(r.id): r for r in wait_until_final(running.database_url, ids, timeout)}
    cpu = cpu_used(cpu_before, running.sampler.cpu_s(), len(accepted))
    result = report(args, plan, accepted, rows, sending, floor_idle, floor_loaded)
    result["cpu"] = cpu
    result["batches"] = batch_sizes(rows.values())
    return result


def batch_sizes(rows: Iterable[ValidationRequest]) -> dict[str, Any]:
    """How the API grouped the POSTs: one message per group (`batch_id`) or per request."""
    groups: Counter[str] = Counter(str(row.batch_id or row.id) for row in rows)
    sizes = sorted(groups.values())
    return {
        "messages": len(sizes),
        "mean_size": round(statistics.fmean(sizes), 2) if sizes else None,
        "largest": max(sizes, default=0),
    }


def report(
    args: argparse.Namespace,
    plan: list[Sent],
    accepted: list[Sent],
    rows: dict[str, ValidationRequest],
    sending: float,
    floor_idle: list[float],
    floor_loaded: list[float],
) -> dict[str, Any]:
    end_to_end, queued, ran = [], [], []
    outcomes: dict[str, int] = {}
    for sent in accepted:
        row = rows.get(sent.request_id or "")
        if row is None or row.finished_at is None:
            outcomes["(not finished)"] = outcomes.get("(not finished)", 0) + 1
            continue
        outcome = row.outcome.value if row.outcome else "(none)"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        end_to_end.append(row.finished_at.timestamp() - sent.sent_at)
        if row.started_at is not None:
            queued.append((row.started_at - row.created_at).total_seconds())
            ran.append((row.finished_at - row.started_at).total_seconds())
    floor = summary_ms(floor_idle)
    e2e = summary_ms(end_to_end)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        # Other work on the machine skews every figure: the load average says how much.
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "config": {
            "offered_rate": args.rate,
            "duration_s": args.duration,
            "fake_latency_ms": args.latency_ms,
            "workers": args.workers,
            "pool": args.pool,
            "concurrency": args.concurrency,
        },
        "sent": len(plan),
        "accepted": len(accepted),
        "refused_or_failed": len(plan) - len(accepted),
        "sent_per_s": round(len(plan) / sending, 1) if sending else None,
        # Answered, not merely sent: from the first POST to the last 2xx answer.
        "accepted_per_s": round(len(accepted) / answered_span(accepted), 1) if accepted else None,
        "api_answer_ms": summary_ms([s.answered_in for s in accepted]),
        "post_to_outcome_ms": e2e,
        "queued_ms": summary_ms(queued),
        "running_ms": summary_ms(ran),
        "floor_idle_ms": floor,
        "floor_under_load_ms": summary_ms(floor_loaded),
        "p50_over_floor_ms": round(e2e["p50"] - floor["p50"], 1),
        "outcomes": outcomes,
    }


def answered_span(accepted: list[Sent]) -> float:
    first = min(s.sent_at for s in accepted)
    return max(s.sent_at + s.answered_in for s in accepted) - first


def print_table(result: dict[str, Any]) -> None:
    config = result["config"]
    print(
        f"\nenqueue: {config['offered_rate']:.0f} req/s offered for {config['duration_s']:.0f} s, "
        f"fake at {config['fake_latency_ms']} ms, {config['workers']} worker(s) "
        f"--pool {config['pool']} --concurrency {config['concurrency']}"
    )
    print(
        f"accepted {result['accepted']}/{result['sent']} "
        f"({result['accepted_per_s']} req/s answered, {result['sent_per_s']} sent); "
        f"outcomes {result['outcomes']}"
    )
    print(f"{'':28}{'p50':>9}{'p99':>9}{'max':>9}")
    for label, name in [
        ("API answer (POST)", "api_answer_ms"),
        ("POST -> outcome written", "post_to_outcome_ms"),
        ("  queued (row -> started)", "queued_ms"),
        ("  running (started -> done)", "running_ms"),
        ("floor: fake, idle", "floor_idle_ms"),
        ("floor: fake, under load", "floor_under_load_ms"),
    ]:
        row = result[name]
        print(f"{label:28}{row['p50']:>9}{row['p99']:>9}{row['max']:>9}")
    print(f"p50 over the floor: {result['p50_over_floor_ms']} ms (target: within 25 ms)")
    batches, cpu = result["batches"], result["cpu"]
    print(
        f"messages to the workers: {batches['messages']} "
        f"(mean group {batches['mean_size']}, largest {batches['largest']})"
    )
    per_request = {
        name: round(seconds / max(1, result["accepted"]) * 1000, 2)
        for name, seconds in cpu["seconds"].items()
    }
    print(f"CPU ms per request: {cpu['ms_per_validation']} in all, by process {per_request}")
    print(f"load average (1 min) at the end: {result['machine']['load_average_1m_at_end']}")


def main() -> None:
    args = parse_args()
    with ExitStack() as stack:
        running = stack.enter_context(services(args, stack))
        result = measure(args, running)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
