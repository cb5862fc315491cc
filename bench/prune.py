"""Retention benchmark: the database's size at steady state, and work that stays flat.

    python -m bench.prune                       # 100,000 teams, 30 daily runs; a year of 10,000
    python -m bench.prune --teams 20000 --year-teams 2000

Everything is real and on this machine: a throwaway PostgreSQL database (dropped at
the end), its rows generated in SQL (INSERT ... SELECT over generate_series) in the
shape the service writes them. Measured:

(a) sizes: `--teams` teams over `--accounts` accounts after `--runs` daily runs
    (one finished request per team per run, 1% of teams changing status a day),
    `pg_total_relation_size` of each table (its indexes and TOAST included);
(b) the writes beside a large table: the dispatcher's write (`insert_pending` of a
    page of `--page` teams) and a batch's write (`finish_many` of `--batch` checks,
    teams and requests), each the median of `--repeat` rounds, on the table of (a)
    and on the same database with `validation_requests` truncated;
(c) pruning: a year of daily requests for `--year-teams` teams, pruned with the
    default retention (30 days) a page of 5,000 at a time; each page's time.

Prints a table and writes bench/results/prune.json. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from bench.common import database
from models import Outcome, Requester, Team, utcnow
from models.db import session_factory
from worker.checks.records import Completion, finish_many
from worker.checks.requests import insert_pending, pending_columns
from worker.checks.rules import Result, Target
from worker.periodic.retention import PAGE_SIZE, prune_requests_page
from worker.platforms import OPSGENIE

BASE_URL = "https://api.opsgenie.com/"
RESULTS = Path(__file__).parent / "results" / "prune.json"
TABLES = [
    "validation_requests",
    "teams",
    "team_status_changes",
    "organization_integrations",
    "integrations",
    "validation_runs",
    "base_url_events",
    "held_changes",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=30, help="daily runs kept (the retention)")
    parser.add_argument("--year-teams", type=int, default=10_000, help="teams for (c); 0 skips")
    parser.add_argument("--page", type=int, default=5_000, help="the dispatcher's page, for (b)")
    parser.add_argument("--batch", type=int, default=250, help="a batch's checks, for (b)")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def execute(sessions: sessionmaker[Session], sql: str, **params: Any) -> None:
    with sessions.begin() as session:
        session.execute(text(sql), params)


def install_fleet(sessions: sessionmaker[Session], teams: int, accounts: int) -> None:
    """Accounts, each installed by an organization of its own, and their teams, with a
    key encrypted the size a Fernet token of a 36-character key is (140 bytes)."""
    execute(
        sessions,
        "INSERT INTO integrations (id, organization_id, provider, account_name, base_url, "
        "created_at, platform) SELECT a, a, 'opsgenie', 'account-' || a, "
        "'https://api.opsgenie.com/', now(), 'opsgenie' FROM generate_series(1, :accounts) AS a",
        accounts=accounts,
    )
    execute(
        sessions,
        "INSERT INTO organization_integrations (id, organization_id, integration_id, status, "
        "created_at) SELECT a, a, a, 'active', now() FROM generate_series(1, :accounts) AS a",
        accounts=accounts,
    )
    execute(
        sessions,
        "INSERT INTO teams (id, organization_integration_id, label, encrypted_key, key_version, "
        "status, status_changed_at, last_checked_at, last_http_status, created_at) "
        "SELECT (1 + mod(t, :accounts)) || '-team-' || t, 1 + mod(t, :accounts), 'team-' || t, "
        "convert_to(repeat('k', 140), 'UTF8'), 1, 'valid', now(), now(), 200, now() "
        "FROM generate_series(1, :teams) AS t",
        accounts=accounts,
        teams=teams,
    )


REQUEST_ID = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING "
    "substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3) "
    "FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


def add_runs(sessions: sessionmaker[Session], teams: int, accounts: int, days: int) -> None:
    """One finished request per team per day for `days` days (a run id per day, a batch
    id per 250 teams), and a status change for 1% of the teams a day."""
    execute(
        sessions,
        "INSERT INTO validation_runs (id, requested_by, total, created_at, dispatched_at) "
        "SELECT md5('run' || d)::uuid, 'beat', :teams, now() - d * interval '1 day', "
        "now() - d * interval '1 day' FROM generate_series(1, :days) AS d",
        teams=teams,
        days=days,
    )
    execute(
        sessions,
        "INSERT INTO validation_requests (id, organization_id, integration_id, team_id, "
        "requested_by, state, outcome, message, http_status, attempts, created_at, started_at, "
        "finished_at, published_at, run_id, batch_id) "
        f"SELECT {REQUEST_ID}, 1 + mod(t, :accounts), 1 + mod(t, :accounts), "
        "(1 + mod(t, :accounts)) || '-team-' || t, 'beat', 'done', 'valid', "
        "'The key of team ''team-' || t || ''' works: Opsgenie accepted it.', 200, 1, "
        "at, at + interval '10 seconds', at + interval '11 seconds', at, md5('run' || d)::uuid, "
        "md5('batch' || d || '-' || (t / 250))::uuid "
        "FROM generate_series(1, :days) AS d, generate_series(1, :teams) AS t, "
        "LATERAL (SELECT now() - d * interval '1 day' + t * interval '1 millisecond' AS at) AS m",
        accounts=accounts,
        teams=teams,
        days=days,
    )
    execute(
        sessions,
        "INSERT INTO team_status_changes (team_id, request_id, old_status, new_status, "
        "changed_at, notified_at, notify_attempts) "
        "SELECT r.team_id, r.id, 'valid', 'invalid_key', r.finished_at, r.finished_at, 1 "
        "FROM validation_requests AS r WHERE mod(abs(hashtext(r.id::text)), 100) = 0",
    )


def vacuum(url: str) -> None:
    import psycopg

    from bench.common import libpq

    with psycopg.connect(libpq(url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        # The load's dirty pages written now, not by a checkpoint during the timings.
        connection.execute("CHECKPOINT")


def sizes(sessions: sessionmaker[Session]) -> dict[str, dict[str, int]]:
    with sessions() as session:
        return {
            table: {
                "rows": int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0),
                "bytes": int(
                    session.scalar(text("SELECT pg_total_relation_size(:t)"), {"t": table}) or 0
                ),
                "index_bytes": int(
                    session.scalar(text("SELECT pg_indexes_size(:t)"), {"t": table}) or 0
                ),
            }
            for table in TABLES
        }


def timed_writes(
    sessions: sessionmaker[Session], teams: list[tuple[str, int, int]], args: argparse.Namespace
) -> dict[str, float]:
    """Median seconds of the dispatcher's write of a page and of a batch's write."""
    dispatching, writing = [], []
    run_id = uuid.uuid4()
    execute(
        sessions,
        "INSERT INTO validation_runs (id, requested_by, total, created_at) "
        "VALUES (:id, 'beat', :total, now())",
        id=run_id,
        total=args.repeat * args.page,
    )
    for round_ in range(args.repeat):
        page = teams[(round_ * args.page) % len(teams) :][: args.page]
        # As the dispatcher writes them: its run, a batch id per `--batch` teams, when due.
        now = utcnow()
        batch_ids = [uuid.uuid4() for _ in range(0, len(page), args.batch)]
        rows = [
            {
                "organization_id": o,
                "integration_id": o,
                "team_id": t,
                "batch_id": batch_ids[i // args.batch],
                "next_attempt_at": now,
            }
            for i, (t, o, _) in enumerate(page)
        ]
        started = time.perf_counter()
        with sessions.begin() as session:
            insert_pending(session, rows, **pending_columns(Requester.BEAT, now), run_id=run_id)
        dispatching.append(time.perf_counter() - started)
        with sessions() as session:
            open_ids: dict[str, uuid.UUID] = dict(
                session.execute(
                    text("SELECT team_id, id FROM validation_requests WHERE state = 'pending'")
                ).all()
            )
        now = utcnow()
        completions = [
            Completion(
                open_ids[team_id],
                Result(Outcome.VALID, "The key works.", 200),
                Target(
                    team_id, team_id, f"account-{o}", o, BASE_URL, "k", 1, OPSGENIE, "alerts", o
                ),
                now,
                1,
            )
            for team_id, o, _ in page[: args.batch]
        ]
        started = time.perf_counter()
        with sessions.begin() as session:
            finish_many(session, completions)
        writing.append(time.perf_counter() - started)
        # Close the rest of the page, as its other batches would: the next round's
        # teams must have no open request.
        execute(
            sessions,
            "UPDATE validation_requests SET state = 'done', finished_at = now() "
            "WHERE state = 'pending'",
        )
    return {
        "dispatcher_page_s": statistics.median(dispatching),
        "batch_write_s": statistics.median(writing),
    }


def fleet_teams(sessions: sessionmaker[Session]) -> list[tuple[str, int, int]]:
    with sessions() as session:
        rows = session.execute(select(Team.id, Team.organization_integration_id, Team.key_version))
        return [(team_id, org, version) for team_id, org, version in rows]


def prune_year(url: str, teams: int) -> dict[str, Any]:
    """A year of daily requests for `teams` teams, pruned with a 30-day retention."""
    sessions = session_factory(url)
    install_fleet(sessions, teams, max(1, teams // 100))
    add_runs(sessions, teams, max(1, teams // 100), 365)
    vacuum(url)
    before = utcnow() - timedelta(days=30)
    pages: list[float] = []
    deleted = 0
    while True:
        started = time.perf_counter()
        with sessions.begin() as session:
            count, done = prune_requests_page(session, before, PAGE_SIZE)
        pages.append(time.perf_counter() - started)
        deleted += count
        if done:
            break
    full = pages[:-1] or pages
    return {
        "rows": teams * 365,
        "deleted": deleted,
        "kept_old": teams * 335 - deleted,
        "pages": len(pages),
        "first_page_s": full[0],
        "median_page_s": statistics.median(full),
        "last_full_page_s": full[-1],
        "slowest_page_s": max(full),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with database(args.postgres, "ogv_bench_prune") as url:
        sessions = session_factory(url)
        started = time.perf_counter()
        install_fleet(sessions, args.teams, args.accounts)
        add_runs(sessions, args.teams, args.accounts, args.runs)
        vacuum(url)
        result["build_s"] = time.perf_counter() - started
        result["sizes"] = sizes(sessions)
        save(args, result)
        teams = fleet_teams(sessions)
        result["writes_beside_full"] = timed_writes(sessions, teams, args)
        # A new, empty table (TRUNCATE), not one emptied by DELETE: that one keeps its
        # 1.4 GB of free pages, which inserts reuse instead of extending the table.
        execute(sessions, "TRUNCATE team_status_changes, validation_requests")
        vacuum(url)
        result["writes_beside_empty"] = timed_writes(sessions, teams, args)
        save(args, result)
    if args.year_teams:
        with database(args.postgres, "ogv_bench_prune") as url:
            result["prune_year"] = prune_year(url, args.year_teams)
    full, empty = result["writes_beside_full"], result["writes_beside_empty"]
    result["ratios"] = {name: full[name] / empty[name] for name in full}
    save(args, result)
    report(result)


def save(args: argparse.Namespace, result: dict[str, Any]) -> None:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


def report(result: dict[str, Any]) -> None:
    lines = [f"{'table':<28}{'rows':>12}{'MB':>10}{'indexes MB':>12}"]
    for table, size in result["sizes"].items():
        lines.append(
            f"{table:<28}{size['rows']:>12,}{size['bytes'] / 2**20:>10.1f}"
            f"{size['index_bytes'] / 2**20:>12.1f}"
        )
    full, empty, ratios = (
        result["writes_beside_full"],
        result["writes_beside_empty"],
        result["ratios"],
    )
    for name in full:
        lines.append(
            f"{name}: {full[name] * 1000:.1f} ms beside the full table, "
            f"{empty[name] * 1000:.1f} ms beside an empty one ({ratios[name]:.2f}x)"
        )
    year = result.get("prune_year")
    if year is None:
        print("\n".join(lines))
        return
    lines.append(
        f"prune a year of {year['rows']:,} rows ({year['kept_old']:,} old ones kept): "
        f"{year['pages']} pages, first "
        f"{year['first_page_s'] * 1000:.0f} ms, median {year['median_page_s'] * 1000:.0f} ms, "
        f"last full {year['last_full_page_s'] * 1000:.0f} ms, slowest "
        f"{year['slowest_page_s'] * 1000:.0f} ms"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

__all__ = ["main"]
