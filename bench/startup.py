"""How long `ogv` takes to start: `ogv --help` and `ogv status`, beside `python -c pass`.

    python3 dev.py bench startup                    # 10 runs of each
    python3 dev.py bench startup --runs 20 --output bench/results/startup-x.json
    python3 dev.py bench startup --code /tmp/ogv-before   # another checkout's code

The machine is shared and noisy, so the figure that matters is each command's
median wall time *over* the median of `python -c pass` measured in the same run:
that is what importing and running our code costs. The commands take turns (pass,
help, status, pass, ...) so that a noisy spell hits all of them alike.

Beside them, the floors: a bare `python -c "import X"` of what `ogv status` cannot
do without (typer and rich, SQLAlchemy, our mapped models, the settings), to say
what its time is made of (`--no-floors` leaves them out).

`ogv status` runs on the embedded default (SQLite under a fresh OGV_DATA_DIR) with
the schema created and a few teams stored first, by the same code being measured.
One more run of it under `-X importtime` says which packages its start-up imports
cost most (self time, summed per top-level package).

Prints a table and writes bench/results/startup.json. Needs no server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "startup.json"
PYTHON = sys.executable
OGV = str(Path(PYTHON).with_name("ogv"))
TEAMS = 5
HEAVIEST_SHOWN = 12

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "ogv --help": [OGV, "--help"],
    "ogv status": [OGV, "status"],
}
FLOORS: dict[str, list[str]] = {
    f"import {name}": [PYTHON, "-c", f"import {name}"]
    for name in ("typer, rich.table", "sqlalchemy.orm", "models", "worker.settings")
}
"""What `ogv status` cannot do without, each alone: the CLI's framework, SQLAlchemy,
SQLAlchemy with our mapped classes, and the settings (pydantic-settings)."""


def environment(data_dir: Path, code: Path | None) -> dict[str, str]:
    """The embedded default: no OGV_* setting but the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OGV_")}
    env["OGV_DATA_DIR"] = str(data_dir)
    env.pop("PYTHONPATH", None)
    # As an installed `ogv` runs: with its modules' .pyc files written once, not
    # compiled again on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if code is not None:
        # Found before the editable install of this checkout (sys.path comes first).
        env["PYTHONPATH"] = str(code)
    return env


def prepare(env: dict[str, str]) -> None:
    """The schema, one account and a few teams, stored through `ogv` itself."""
    ogv = [OGV]
    subprocess.run([*ogv, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*ogv, "integration", "add", "--org", "1", "--account", "acme"],
        env=env,
        check=True,
        capture_output=True,
    )
    for n in range(TEAMS):
        subprocess.run(
            [*ogv, "team", "add", "--org", "1", "--integration", "1", "--label", f"team-{n}"],
            env=env,
            input=f"00000000-0000-4000-8000-{n:012d}\n".encode(),
            check=True,
            capture_output=True,
        )


def wall_time(argv: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(
    commands: dict[str, list[str]], env: dict[str, str], runs: int
) -> dict[str, list[float]]:
    for argv in commands.values():  # once, unmeasured: the page cache and .pyc files
        wall_time(argv, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(wall_time(argv, env))
    return times


def heaviest_imports(argv: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """Import self time in ms per top-level package, for one run of the script `argv`."""
    found = subprocess.run(
        [PYTHON, "-X", "importtime", *argv],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    per_package: dict[str, float] = defaultdict(float)
    for line in found.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        per_package[name.strip().split(".")[0]] += int(self_us) / 1000
    ranked = sorted(per_package.items(), key=lambda item: -item[1])
    return {name: round(ms, 1) for name, ms in ranked[:HEAVIEST_SHOWN]}


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    baseline = statistics.median(times["python -c pass"])
    summary = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        summary[name] = {
            "median_s": round(median, 3),
            "over_python_s": round(median - baseline, 3),
            "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3),
        }
    return summary


def print_table(summary: dict[str, dict[str, float]], heaviest: dict[str, float]) -> None:
    print(f"{'command':<34} {'median s':>9} {'over pass':>10} {'min s':>7} {'max s':>7}")
    for name, row in summary.items():
        if name in FLOORS and next(iter(FLOORS)) == name:
            print("what ogv status needs, alone:")
        print(
            f"{name:<34} {row['median_s']:>9.3f} {row['over_python_s']:>10.3f} "
            f"{row['min_s']:>7.3f} {row['max_s']:>7.3f}"
        )
    print("\nogv status, import self time per package (ms, one run):")
    for package, ms in heaviest.items():
        print(f"  {package:<24} {ms:>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--code", type=Path, help="measure this checkout's code (e.g. a git worktree) instead"
    )
    parser.add_argument("--no-floors", action="store_true", help="measure only the three commands")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ogv-startup-") as tmp:
        env = environment(Path(tmp), args.code)
        prepare(env)
        times = measure(COMMANDS | ({} if args.no_floors else FLOORS), env, args.runs)
        heaviest = heaviest_imports(COMMANDS["ogv status"], env)
    summary = summarise(times)
    print_table(summary, heaviest)
    result: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "code": str(args.code or ROOT),
        "runs": args.runs,
        "commands": summary,
        "status_import_self_ms": heaviest,
        "seconds": {name: [round(s, 4) for s in seconds] for name, seconds in times.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
