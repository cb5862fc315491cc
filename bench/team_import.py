"""`ogv team import` at scale: lines a second and peak memory, 100k and 1M lines.

Each size runs in a process of its own (so its peak memory is its own) against a
throwaway PostgreSQL database: the file is written first, then `import_teams`
reads it as the CLI does (raw lines, one transaction, chunks of 1,000). Flat
memory means the 1M run peaks about where the 100k run does.

    python3 dev.py bench team_import                       # 100,000 and 1,000,000 lines
    python3 dev.py bench team_import --sizes 20000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from bench.common import database

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ACCOUNTS = 50


def write_file(path: Path, lines: int) -> None:
    with path.open("w") as handle:
        for n in range(lines):
            handle.write(
                json.dumps(
                    {
                        "organization_id": 1,
                        "integration_id": 1 + n % ACCOUNTS,
                        "label": f"team-{n:08d}",
                        "integration_key": f"00000000-0000-4000-8000-{n:012d}",
                    }
                )
                + "\n"
            )


def run_one(url: str, path: Path) -> dict[str, float]:
    """In this process: install the accounts, import the file, report."""
    from models.crypto import KeyVault
    from models.db import session_factory
    from worker import inventory
    from worker.operations.importer import import_teams

    sessions = session_factory(url)
    with sessions.begin() as session:
        for n in range(ACCOUNTS):
            inventory.add_integration(
                session,
                organization_id=1,
                account_name=f"acct-{n}",
                base_url="https://api.opsgenie.com/",
                allowed_base_urls=["https://api.opsgenie.com/"],
            )
    vault = KeyVault([Fernet.generate_key()])
    started = time.perf_counter()
    with path.open("rb") as handle:
        report = import_teams(sessions, handle, vault)
    seconds = time.perf_counter() - started
    assert report.written and not report.errors, report.errors[:3]
    return {
        "lines": report.imported,
        "seconds": round(seconds, 2),
        "lines_per_second": round(report.imported / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--postgres", default=os.environ.get("OGV_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--one", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]))))
        return
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(folder) / f"teams-{size}.jsonl"
            write_file(path, size)
            with database(args.postgres, "ogv_bench_import") as url:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.team_import", "--one", url, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            result = json.loads(done.stdout.splitlines()[-1])
            results.append(result)
            print(
                f"{result['lines']:>9,} lines  {result['seconds']:>7.1f} s  "
                f"{result['lines_per_second']:>7,}/s  peak {result['peak_rss_mb']} MB",
                flush=True,
            )
    out = Path("bench/results/team_import.json")
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
