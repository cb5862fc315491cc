"""Periodic re-validation benchmark: every stored key, at the speed of the network?

    python -m bench.revalidate                  # 100,000 teams over 1,000 accounts, then 1M
    python -m bench.revalidate --teams 20000 --accounts 200 --big-teams 0 --configs prefork:2

Everything is real and on this machine: a fresh PostgreSQL database (dropped at
the end), a Redis database (flushed at the start, between phases and at the
end), and the fake Opsgenie as its own process (`ogv fake-opsgenie`) answering
every key `valid` after `--latency-ms`, each key mapped to its own account so the
fake counts calls per account. Teams are spread evenly: `--accounts` Opsgenie
accounts, each installed by its own organization, each with teams/accounts teams
and one distinct key per team. Measured in one run:

(a) the ceiling: `bench/ceiling.py`, a bare aiohttp loop making the same probe
    for every key, `--ceiling-concurrency` at a time; no Celery, no database.
(b) the naive baseline: `bench/naive_app.py`, one Celery task per key with a
    blocking urllib call and one UPDATE, `--pool threads --concurrency 64`, on
    `--naive-keys` teams (one in every teams/naive-keys, so every account).
(c) the service: `ogv revalidate --all` (the dispatcher: it streams the teams,
    records the requests and publishes batch tasks, then follows the run) ->
    Redis -> `celery -A worker worker` with each `--configs` pool in turn ->
    the fake -> PostgreSQL. The best configuration is (c).

Throughput is validations per second from the first enqueue to the last outcome
written: (a) first call to last answer; (b) first publish to the last UPDATE's
clock_timestamp(); (c) the run's creation (the dispatcher starting) to the last
request's finished_at. Peak memory is VmHWM from /proc/<pid>/status, sampled
every 0.2 s for each process and each prefork child (the last sample of a
process is taken when its output ends, just before it exits). Then the dispatcher alone
(`ogv revalidate --all --no-wait`, no worker consuming) at `--teams` and at
`--big-teams` teams (added with COPY), its queue purged after each.

Prints a table and writes bench/results/revalidate.json. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from bench.common import (
    Sampler,
    cpu_used,
    database,
    free_port,
    libpq,
    ogv,
    serving,
)
from worker.settings import OFFICIAL_BASE_URLS
from worker.testing.local import LocalWorker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "revalidate.json"
LOGS = ROOT / "artifacts" / "bench-revalidate"
NAMESPACE = "ogvbench"
NAIVE_QUEUE = "ogvbench-naive"
WORKLOADS = {"many": (1_000, 10.0), "busy": (40, 250.0)}
"""Two spreads of the same teams (issue 17): many quiet accounts, or few busy ones."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("--teams", type=int, default=100_000, help="teams validated")
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        help="a named spread of the teams: sets --accounts and --account-rate "
        + "; ".join(f"{name}: {a} accounts at {r}/s" for name, (a, r) in WORKLOADS.items()),
    )
    parser.add_argument("--accounts", type=int, default=1_000, help="Opsgenie accounts")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the ceiling and each configuration this many times, interleaved; the "
        "summary keeps the best and the median c/a, each run beside its own ceiling",
    )
    parser.add_argument("--latency-ms", type=int, default=50, help="the fake's latency per call")
    parser.add_argument(
        "--account-rate", type=float, default=10.0, help="OGV_ACCOUNT_RATE: calls/s per account"
    )
    parser.add_argument("--ceiling-concurrency", type=int, default=256)
    parser.add_argument("--naive-keys", type=int, default=10_000, help="keys for (b); 0 skips")
    parser.add_argument("--naive-threads", type=int, default=64)
    parser.add_argument(
        "--configs",
        default="prefork:3,prefork:4,prefork:6",
        help="worker configurations for (c), POOL:CONCURRENCY[xPROCESSES], comma-separated",
    )
    parser.add_argument(
        "--service-env",
        default="",
        help="extra OGV_* settings for (c)'s workers and dispatcher, e.g. OGV_BATCH_SIZE=200",
    )
    parser.add_argument(
        "--big-teams", type=int, default=1_000_000, help="teams for the 2nd dispatcher run; 0 skips"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "OGV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server where a throwaway database is created (the database name is ignored)",
    )
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/9", help="a Redis database it may flush"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.workload:
        args.accounts, args.account_rate = WORKLOADS[args.workload]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.teams % args.accounts or args.big_teams % args.accounts:
        parser.error("--teams and --big-teams must be multiples of --accounts")
    return args


# -- processes and their memory -------------------------------------------------------------


# -- the services ---------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    url: str  # SQLAlchemy URL of the throwaway database
    fernet_key: str
    fake_url: str
    env: dict[str, str]
    logs: Path
    sampler: Sampler
    keys: list[str] = field(default_factory=list)  # in team order
    team_ids: list[str] = field(default_factory=list)
    links: list[int] = field(default_factory=list)  # organization integration per account

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def fake(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.fake_url + path.lstrip("/"), method=method)
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.load(answer)

    def flush_redis(self) -> None:
        redis.Redis.from_url(self.args.redis).flushdb()


def account_name(a: int) -> str:
    return f"bench-acct-{a:05d}"


def install(bench: Bench, teams: int, accounts: int) -> None:
    """`accounts` accounts, each installed by its own organization, with teams/accounts teams."""
    per_account = teams // accounts
    now = datetime.now(UTC)
    fernet = Fernet(bench.fernet_key.encode())
    with psycopg.connect(libpq(bench.url)) as conn:
        with conn.cursor().copy(
            "COPY integrations (id, organization_id, provider, account_name, base_url, "
            "created_at) FROM STDIN"
        ) as copy:
            for a in range(1, accounts + 1):
                copy.write_row((a, 1000 + a, "opsgenie", account_name(a), bench.fake_url, now))
        with conn.cursor().copy(
            "COPY organization_integrations (id, organization_id, integration_id, status, "
            "created_at) FROM STDIN"
        ) as copy:
            for a in range(1, accounts + 1):
                copy.write_row((a, 1000 + a, a, "active", now))
        bench.links = list(range(1, accounts + 1))
        with conn.cursor().copy(
            "COPY teams (id, organization_integration_id, label, encrypted_key, key_version, "
            "status, created_at) FROM STDIN"
        ) as copy:
            for a in range(1, accounts + 1):
                for t in range(per_account):
                    key = f"{account_name(a)}.{uuid.uuid4()}"  # the fake reads its account
                    label = f"team-{t:06d}"
                    bench.keys.append(key)
                    bench.team_ids.append(f"{a}-{label}")
                    token = fernet.encrypt(key.encode())
                    copy.write_row((f"{a}-{label}", a, label, token, 1, "unknown", now))
        conn.execute("SELECT setval('integrations_id_seq', %s)", (accounts,))
        conn.execute("SELECT setval('organization_integrations_id_seq', %s)", (accounts,))
    bench.sql("VACUUM ANALYZE")


def add_teams(bench: Bench, total: int) -> float:
    """Grow every account to total/accounts teams with COPY (the new teams share a token)."""
    accounts = len(bench.links)
    have, want = len(bench.team_ids) // accounts, total // accounts
    started = time.perf_counter()
    now = datetime.now(UTC)
    token = Fernet(bench.fernet_key.encode()).encrypt(b"not-checked-in-this-phase")
    with (
        psycopg.connect(libpq(bench.url)) as conn,
        conn.cursor().copy(
            "COPY teams (id, organization_integration_id, label, encrypted_key, key_version, "
            "status, created_at) FROM STDIN"
        ) as copy,
    ):
        for a in bench.links:
            for t in range(have, want):
                copy.write_row((f"{a}-team-{t:06d}", a, f"team-{t:06d}", token, 1, "unknown", now))
    bench.sql("VACUUM ANALYZE teams")
    return time.perf_counter() - started


def write_scenario(bench: Bench, path: Path) -> None:
    """Every key valid, in the account its text names: nothing per key, so the fake's
    memory does not grow with the fleet."""
    scenario = {
        "default": {"behaviour": "valid"},
        "account_separator": ".",
        "latency_ms": bench.args.latency_ms,
    }
    path.write_text(json.dumps(scenario))


def reset_state(bench: Bench) -> None:
    """Every configuration starts from the same state: unknown teams, no requests, no history."""
    bench.sql("TRUNCATE validation_requests, validation_runs, team_status_changes")
    bench.sql(
        "UPDATE teams SET status = 'unknown', status_changed_at = NULL, last_checked_at = NULL, "
        "last_error_code = NULL, last_http_status = NULL"
    )
    bench.sql("VACUUM ANALYZE")
    bench.flush_redis()
    bench.fake("POST", "/_fake/reset")


def rate_check(stats: dict[str, Any], accounts: int) -> dict[str, Any]:
    per_second = stats["max_calls_per_second_by_account"]
    busiest = max(per_second, key=per_second.get) if per_second else None
    return {
        "calls": stats["total"],
        "accounts_called": len(per_second),
        "max_calls_per_second_any_account": per_second[busiest] if busiest else 0,
        "busiest_account": busiest,
        "accounts_expected": accounts,
    }


# -- (a) the ceiling ------------------------------------------------------------------------


def measure_ceiling(bench: Bench) -> dict[str, Any]:
    keys_file = bench.logs / "keys.txt"
    keys_file.write_text("\n".join(bench.keys) + "\n")
    bench.fake("POST", "/_fake/reset")
    argv = [
        sys.executable,
        "-m",
        "bench.ceiling",
        bench.fake_url,
        str(keys_file),
        "--concurrency",
        str(bench.args.ceiling_concurrency),
    ]
    cpu_before = bench.sampler.cpu_s()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)
    bench.sampler.watch(process.pid, "(a) ceiling loop")
    assert process.stdout is not None
    output = process.stdout.read()
    bench.sampler.unwatch(process.pid)
    code = process.wait(60)
    if code != 0:
        raise RuntimeError(f"the ceiling loop exited with {code}")
    result: dict[str, Any] = json.loads(output)
    result["cpu"] = cpu_used(cpu_before, bench.sampler.cpu_s(), result["calls"])
    result["fake_calls"] = bench.fake("GET", "/_fake/stats")["total"]
    keys_file.unlink()
    return result


# -- (b) the naive baseline -----------------------------------------------------------------


def measure_naive(bench: Bench) -> dict[str, Any]:
    count = bench.args.naive_keys
    step = max(1, len(bench.team_ids) // count)
    subset = bench.team_ids[::step][:count]
    reset_state(bench)
    env = {
        **bench.env,
        "NAIVE_BROKER_URL": bench.args.redis,
        "NAIVE_DATABASE_URL": bench.url,
        "NAIVE_FERNET_KEY": bench.fernet_key,
        "NAIVE_QUEUE": NAIVE_QUEUE,
    }
    worker = LocalWorker(
        env, bench.logs / "naive-worker.log", pool="threads",
        concurrency=bench.args.naive_threads, name="naive",
    )  # fmt: skip
    worker.argv[worker.argv.index("worker")] = "bench.naive_app"  # -A bench.naive_app
    worker.argv += ["--queues", NAIVE_QUEUE]
    producer = Celery("naive-producer", broker=bench.args.redis)
    with worker:
        bench.sampler.watch(worker.pid, "(b) naive worker")
        cpu_before = bench.sampler.cpu_s()
        started = time.time()
        with producer.connection_for_write() as conn:
            for team_id in subset:
                producer.send_task("naive.validate", args=[team_id], queue=NAIVE_QUEUE,
                                   connection=conn)  # fmt: skip
        published = time.time() - started
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            [(done, last)] = bench.sql(
                "SELECT count(*), max(last_checked_at) FROM teams WHERE last_checked_at IS NOT NULL"
            )
            if done >= len(subset):
                break
            time.sleep(0.2)
        cpu = cpu_used(cpu_before, bench.sampler.cpu_s(), done)
        bench.sampler.unwatch(worker.pid)
    seconds = last.timestamp() - started
    statuses = dict(bench.sql("SELECT status, count(*) FROM teams GROUP BY status"))
    stats = bench.fake("GET", "/_fake/stats")
    return {
        "keys": len(subset),
        "done": done,
        "threads": bench.args.naive_threads,
        "publish_s": round(published, 3),
        "seconds": round(seconds, 3),
        "per_s": round(done / seconds, 1),
        "statuses": {k: v for k, v in statuses.items() if k != "unknown"},
        "rate": rate_check(stats, bench.args.accounts),
        "cpu": cpu,
        "peak_mb": bench.sampler.peaks_mb("(b)"),
    }


# -- (c) the service ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    pool: str
    concurrency: int
    processes: int = 1

    @classmethod
    def parse(cls, text: str) -> WorkerConfig:
        pool, _, rest = text.partition(":")
        concurrency, _, processes = rest.partition("x")
        return cls(pool, int(concurrency), int(processes or 1))

    def __str__(self) -> str:
        suffix = f"x{self.processes}" if self.processes > 1 else ""
        return f"{self.pool}:{self.concurrency}{suffix}"


def run_dispatcher(
    bench: Bench, label: str, *extra: str, env: dict[str, str] | None = None, timeout: float
) -> dict[str, Any]:
    """`ogv revalidate --all --json`: its JSON summary and its peak memory."""
    argv = [ogv(), "revalidate", "--all", "--json", "--timeout", str(int(timeout)), *extra]
    log = (bench.logs / "dispatcher.log").open("ab")
    launched = time.time()
    process = subprocess.Popen(
        argv, env=env or bench.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log
    )
    bench.sampler.watch(process.pid, label)
    assert process.stdout is not None
    output = process.stdout.read()
    bench.sampler.unwatch(process.pid)
    code = process.wait(60)
    log.close()
    if code != 0:
        raise RuntimeError(f"ogv revalidate exited with {code}: {output[-2000:]!r}")
    summary: dict[str, Any] = json.loads(output)
    summary["launched"] = launched
    summary["exited_s"] = round(time.time() - launched, 3)
    return summary


def measure_service(bench: Bench, config: WorkerConfig) -> dict[str, Any]:
    reset_state(bench)
    env = {**bench.env, **dict(s.split("=", 1) for s in bench.args.service_env.split() if s)}
    label = f"(c) {config}"
    scans_before = table_scans(bench)
    with ExitStack() as stack:
        workers = []
        for n in range(config.processes):
            worker = LocalWorker(
                env, bench.logs / f"worker-{config}-{n}.log", pool=config.pool,
                concurrency=config.concurrency, name=f"ogv{n}",
            )  # fmt: skip
            workers.append(stack.enter_context(worker))
            bench.sampler.watch(worker.pid, f"{label} worker {n + 1}")
        cpu_before = bench.sampler.cpu_s()
        summary = run_dispatcher(
            bench, f"{label} dispatcher (ogv revalidate --all)", env=env, timeout=1800
        )
        cpu_after = bench.sampler.cpu_s()
        for worker in workers:
            bench.sampler.unwatch(worker.pid)
    run_id = summary["run_id"]
    [(created, dispatched, first, last, done)] = bench.sql(
        "SELECT r.created_at, r.dispatched_at, min(q.started_at), max(q.finished_at), "
        "count(q.finished_at) FROM validation_runs r JOIN validation_requests q ON q.run_id = r.id "
        "WHERE r.id = %s GROUP BY r.id",
        (run_id,),
    )
    [(attempts, retried)] = bench.sql(
        "SELECT sum(attempts), count(*) FILTER (WHERE attempts > 1) FROM validation_requests "
        "WHERE run_id = %s",
        (run_id,),
    )
    stats = bench.fake("GET", "/_fake/stats")
    scans = {
        table: [after - before for after, before in zip(counts, scans_before[table], strict=True)]
        for table, counts in table_scans(bench).items()
    }
    seconds = (last - created).total_seconds()
    statuses = dict(bench.sql("SELECT status, count(*) FROM teams GROUP BY status"))
    return {
        "config": str(config),
        "pool": config.pool,
        "concurrency": config.concurrency,
        "processes": config.processes,
        "service_env": bench.args.service_env,
        "requests": summary["requests"],
        "batches": summary["batches"],
        "done": done,
        "outcomes": summary["outcomes"],
        "team_statuses": statuses,
        "attempts": int(attempts or 0),
        "requests_retried": int(retried or 0),
        "dispatch_s": round((dispatched - created).total_seconds(), 3),
        "first_start_s": round((first - created).total_seconds(), 3),
        "seconds": round(seconds, 3),
        "per_s": round(done / seconds, 1),
        "cli_launch_to_last_outcome_s": round(last.timestamp() - summary["launched"], 3),
        "rate": rate_check(stats, bench.args.accounts),
        "table_scans_seq_idx": {t: v for t, v in scans.items() if any(v)},
        "cpu": cpu_used(cpu_before, cpu_after, done),
        "peak_mb": bench.sampler.peaks_mb(label),
    }


def table_scans(bench: Bench) -> dict[str, tuple[int, int]]:
    """Sequential and index scans per table so far (pg_stat_user_tables)."""
    rows = bench.sql(
        "SELECT relname, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables ORDER BY relname"
    )
    return {name: (seq, idx) for name, seq, idx in rows}


# -- the dispatcher alone -------------------------------------------------------------------


def measure_dispatcher(bench: Bench, teams: int) -> dict[str, Any]:
    bench.sql("TRUNCATE validation_requests, validation_runs")
    bench.sql("VACUUM ANALYZE")
    bench.flush_redis()
    label = f"dispatcher alone, {teams} teams"
    started = time.perf_counter()
    summary = run_dispatcher(bench, label, "--no-wait", timeout=1800)
    seconds = time.perf_counter() - started
    queued = redis.Redis.from_url(bench.args.redis).llen(NAMESPACE)
    bench.flush_redis()  # purge the queue: no worker consumes it
    bench.sql("TRUNCATE validation_requests, validation_runs")
    return {
        "teams": teams,
        "requests": summary["requests"],
        "batches": summary["batches"],
        "messages_queued": queued,
        "seconds": round(seconds, 2),
        "peak_mb": bench.sampler.peaks_mb(label)[label],
    }


# -- the run --------------------------------------------------------------------------------


def machine(redis_url: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    mem_kb = proc_meminfo("MemTotal")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "redis": redis.Redis.from_url(redis_url).info("server")["redis_version"],
    }


def proc_meminfo(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configs = [WorkerConfig.parse(c) for c in args.configs.split(",") if c]
    logs = LOGS / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    logs.mkdir(parents=True)
    began = time.monotonic()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.revalidate", *(argv or sys.argv[1:])]),
        "machine": machine(args.redis),
        "setup": {
            "teams": args.teams,
            "accounts": args.accounts,
            "teams_per_account": args.teams // args.accounts,
            "fake_latency_ms": args.latency_ms,
            "account_rate": args.account_rate,
            "ceiling_concurrency": args.ceiling_concurrency,
            "naive_keys": args.naive_keys,
            "naive_threads": args.naive_threads,
            "configs": [str(c) for c in configs],
            "service_env": args.service_env,
        },
    }
    with ExitStack() as stack, Sampler() as sampler:
        url = stack.enter_context(database(args.postgres, "ogv_bench_reval"))
        result["machine"]["postgres"] = postgres_server_version(url)
        fernet_key = Fernet.generate_key().decode()
        fake_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}/"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OGV_", "NAIVE_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            OGV_DATA_DIR=str(logs / "data"),
            OGV_NAMESPACE=NAMESPACE,
            OGV_DATABASE_URL=url,
            OGV_BROKER_URL=args.redis,
            OGV_ENCRYPTION_KEYS=fernet_key,
            OGV_ALLOWED_BASE_URLS=",".join([*OFFICIAL_BASE_URLS, fake_url]),
            OGV_ACCOUNT_RATE=str(args.account_rate),
            OGV_DISPATCH_WINDOW="0",
            OGV_METRICS_PORT=str(free_port()),
            OGV_LOG_FORMAT="json",
        )
        bench = Bench(args, url, fernet_key, fake_url, env, logs, sampler)
        sampler.watch_matching(f" {make_url(url).database} ", "postgres backends")
        redis_port = make_url(args.redis).port or 6379
        sampler.watch_matching(f"redis-server 127.0.0.1:{redis_port}", "redis-server")
        bench.flush_redis()
        stack.callback(bench.flush_redis)
        clock = time.perf_counter()
        install(bench, args.teams, args.accounts)
        scenario = logs / "scenario.json"
        write_scenario(bench, scenario)
        fake_argv = [
            *(ogv(), "fake-opsgenie", "--port", str(fake_port), "--scenario", str(scenario)),
            "--counters-only",  # /_fake/stats is all it needs: no call is kept
        ]
        fake = stack.enter_context(serving(fake_argv, env, logs / "fake.log", fake_port))
        sampler.watch(fake.pid, "fake Opsgenie")
        result["setup"]["install_s"] = round(time.perf_counter() - clock, 1)
        say(f"installed {args.teams} teams over {args.accounts} accounts; fake at {fake_url}")

        # Each round measures the ceiling, then every configuration: a run is compared
        # with the ceiling of its own round, measured minutes apart on a noisy machine.
        ceilings, runs = [], []
        for round_ in range(args.repeat):
            ceilings.append(measure_ceiling(bench))
            say(f"(a) ceiling, round {round_ + 1}: {ceilings[-1]['per_s']}/s")
            if args.naive_keys and round_ == 0:
                result["naive"] = measure_naive(bench)
                say(f"(b) naive: {result['naive']['per_s']}/s on {result['naive']['keys']} keys")
            for config in configs:
                run = measure_service(bench, config)
                run["round"], run["ceiling_per_s"] = round_ + 1, ceilings[-1]["per_s"]
                run["ceiling_cpu_ms"] = ceilings[-1]["cpu"]["ms_per_validation"]
                run["c_over_a"] = round(run["per_s"] / ceilings[-1]["per_s"], 3)
                runs.append(run)
                say(f"(c) {config}: {run['per_s']}/s (c/a {run['c_over_a']}), {run['outcomes']}")
        result["ceiling"] = max(ceilings, key=lambda c: c["per_s"])
        result["ceilings"] = ceilings
        best = max(runs, key=lambda r: r["c_over_a"])
        result["service"] = {"runs": runs, "best": best["config"], "per_s": best["per_s"]}
        sampler.unwatch(fake.pid)

        dispatcher = [measure_dispatcher(bench, args.teams)]
        say(f"dispatcher alone at {args.teams}: {dispatcher[-1]['peak_mb']} MB")
        if args.big_teams:
            added = add_teams(bench, args.big_teams)
            say(f"grew to {args.big_teams} teams in {added:.1f}s")
            dispatcher.append(measure_dispatcher(bench, args.big_teams))
            say(f"dispatcher alone at {args.big_teams}: {dispatcher[-1]['peak_mb']} MB")
        result["dispatcher_alone"] = dispatcher
    result["memory_peak_mb"] = sampler.peaks_mb()
    result["summary"] = summarise(result)
    result["total_s"] = round(time.monotonic() - began, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    print(f"wrote {args.output}; logs in {logs}")


def postgres_server_version(url: str) -> str:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else ""


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    runs = result["service"]["runs"]
    best = max(runs, key=lambda r: r["c_over_a"])
    a, c = best["ceiling_per_s"], best["per_s"]
    b = result.get("naive", {}).get("per_s")
    of_best = [r for r in runs if r["config"] == best["config"]]
    ratios = sorted(r["c_over_a"] for r in of_best)
    cpu = sorted(r["cpu"]["ms_per_validation"] / r["ceiling_cpu_ms"] for r in of_best)
    rate = result["setup"]["account_rate"]
    worst_rate = max(
        r["rate"]["max_calls_per_second_any_account"] for r in result["service"]["runs"]
    )
    worker_peaks = {
        name: mb
        for name, mb in result["memory_peak_mb"].items()
        if name.startswith("(c)") and " worker " in name
    }
    dispatch = result["dispatcher_alone"]
    growth = dispatch[-1]["peak_mb"] / dispatch[0]["peak_mb"] - 1 if len(dispatch) > 1 else None
    return {
        "a_ceiling_per_s": a,
        "b_naive_per_s": b,
        "c_service_per_s": c,
        "c_config": best["config"],
        "c_over_a": round(c / a, 3),
        "c_over_a_median": statistics.median(ratios),
        "rounds": len(of_best),
        "cpu_per_check_over_ceiling_best": round(cpu[0], 2),
        "cpu_per_check_over_ceiling_median": round(statistics.median(cpu), 2),
        "c_over_b": round(c / b, 1) if b else None,
        "account_rate": rate,
        "max_calls_per_second_any_account": worst_rate,
        "rate_respected": worst_rate <= rate,
        "max_worker_process_mb": max(worker_peaks.values()),
        "dispatcher_peak_mb": {str(d["teams"]): d["peak_mb"] for d in dispatch},
        "dispatcher_growth": round(growth, 3) if growth is not None else None,
        "targets": {
            "c_over_a >= 0.7 (median)": statistics.median(ratios) >= 0.7,
            "CPU per check <= 2x the ceiling's per call (median)": statistics.median(cpu) <= 2,
            "c_over_b >= 10": None if not b else c / b >= 10,
            "every worker process < 250 MB": max(worker_peaks.values()) < 250,
            # None: not measured (--big-teams 0), rather than missed.
            "dispatcher flat within 20%": None if growth is None else abs(growth) <= 0.2,
            "no account above its rate": worst_rate <= rate,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    s, setup = result["summary"], result["setup"]
    print(
        f"\nre-validation: {setup['teams']} teams over {setup['accounts']} accounts, fake at "
        f"{setup['fake_latency_ms']} ms, OGV_ACCOUNT_RATE={setup['account_rate']}/s"
    )
    print(f"{'':52}{'per s':>9}{'seconds':>9}{'checks':>8}{'CPU ms/check':>14}{'max/s/acct':>12}")
    rows = [
        (f"(a) ceiling, round {n}: bare aiohttp loop", ceiling, ceiling["calls"], "-")
        for n, ceiling in enumerate(result["ceilings"], 1)
    ]
    if "naive" in result:
        naive = result["naive"]
        label = f"(b) naive: task per key, threads:{naive['threads']}"
        rows.append(
            (label, naive, naive["done"], naive["rate"]["max_calls_per_second_any_account"])
        )
    for run in result["service"]["runs"]:
        mark = " *" if run["config"] == s["c_config"] else ""  # the best configuration
        label = f"(c) service, {run['config']}, round {run['round']}{mark}"
        rows.append((label, run, run["done"], run["rate"]["max_calls_per_second_any_account"]))
    for label, row, checks, per_account in rows:
        print(f"{label:52}{row['per_s']:>9}{row['seconds']:>9}{checks:>8}"
              f"{row['cpu']['ms_per_validation']:>14}{per_account:>12}")  # fmt: skip
    print(
        f"c/a = {s['c_over_a']} best, {s['c_over_a_median']} median of {s['rounds']} rounds   "
        f"c/b = {s['c_over_b']}   (* = c)"
    )
    print(
        f"CPU per check / ceiling's CPU per call: {s['cpu_per_check_over_ceiling_best']} best, "
        f"{s['cpu_per_check_over_ceiling_median']} median"
    )
    print(
        f"max calls/s to any account: {s['max_calls_per_second_any_account']} "
        f"(limit {s['account_rate']})"
    )
    print("peak memory (VmHWM, MB):")
    for name, mb in result["memory_peak_mb"].items():
        print(f"  {name:60}{mb:>8}")
    print(f"dispatcher alone: {s['dispatcher_peak_mb']} MB, growth {s['dispatcher_growth']}")
    for target, met in s["targets"].items():
        print(f"  {'n/a    ' if met is None else 'met    ' if met else 'MISSED '} {target}")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


if __name__ == "__main__":
    main()
