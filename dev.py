#!/usr/bin/env python3
"""One entry point for developers and CI; needs nothing but Python 3.11+.

    python3 dev.py demo     # set up .venv if needed, then run `ogv demo`
    python3 dev.py test     # set up .venv if needed, then run the test suite
    python3 dev.py check    # ruff, ruff format --check, mypy (what CI runs)
    python3 dev.py bench NAME [ARGS]  # a benchmark in bench/ (docs/BENCHMARKS.md)
    python3 dev.py ogv ...  # any ogv command inside the project's environment

The virtual environment lives in .venv (or $OGV_VENV) and is reinstalled only
when pyproject.toml or constraints.txt change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("OGV_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".ogv-installed"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit("opsgenie-validator needs Python 3.11 or newer")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "install", "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]"],
        check=True,
    )
    STAMP.write_text(_fingerprint())


def run(*argv: str) -> int:
    return subprocess.run(argv, cwd=ROOT).returncode


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    ensure_venv()
    command, rest = args[0], args[1:]
    if command == "demo":
        return run(str(BIN / "ogv"), "demo", *rest)
    if command == "test":
        return run(str(BIN / "python"), "-m", "pytest", *rest)
    if command == "check":
        for step in (
            ["ruff", "check", "."],
            ["ruff", "format", "--check", "."],
            ["mypy"],
        ):
            if code := run(str(BIN / step[0]), *step[1:]):
                return code
        return 0
    if command == "bench" and rest:
        return run(str(BIN / "python"), "-m", f"bench.{rest[0]}", *rest[1:])
    if command == "ogv":
        return run(str(BIN / "ogv"), *rest)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
