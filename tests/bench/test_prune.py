"""The retention benchmark runs, small, against the code it measures (bench/prune.py).

A benchmark run only on demand rots silently when the schema or a signature moves
under it; this runs it at a hundredth of its size on the session's PostgreSQL and
holds its figures to what it built.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import prune


def test_the_retention_benchmark_measures_what_it_built(postgres_url: str, tmp_path: Path) -> None:
    output = tmp_path / "prune.json"
    prune.main(
        [
            "--teams", "1000",
            "--accounts", "10",
            "--runs", "3",
            "--year-teams", "100",
            "--page", "200",
            "--batch", "50",
            "--repeat", "2",
            "--postgres", postgres_url,
            "--output", str(output),
        ]
    )  # fmt: skip
    result = json.loads(output.read_text())
    sizes = result["sizes"]
    assert sizes["validation_requests"]["rows"] == 3_000
    assert sizes["teams"]["rows"] == 1_000 and sizes["integrations"]["rows"] == 10
    assert sizes["validation_requests"]["index_bytes"] > 0
    for beside in ("writes_beside_full", "writes_beside_empty"):
        assert set(result[beside]) == {"dispatcher_page_s", "batch_write_s"}
        assert all(seconds > 0 for seconds in result[beside].values())
    year = result["prune_year"]
    assert year["rows"] == 100 * 365
    # Past 30 days, only the requests a status change refers to (about 1 in 100) stay.
    assert 0 < year["kept_old"] < 0.03 * 100 * 335
    assert year["pages"] >= 1 and year["first_page_s"] > 0
