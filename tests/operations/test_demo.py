"""The demo's table (worker/operations/demo.py) reads at any terminal width."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from worker.operations.demo import DemoReport, DemoRow

ROWS = [
    DemoRow("payments", "valid", "valid", 1, "ok"),
    DemoRow(
        "revoked", "invalid_key", "invalid_key", 1, "401", expected_hint="key_disabled_or_deleted",
        hint="key_disabled_or_deleted",
    ),
    DemoRow(
        "saved-as-us", "invalid_key", "invalid_key", 1, "401", platform="opsgenie-eu",
        note="works on opsgenie-eu", hint="wrong_region",
    ),
    DemoRow(
        "(no such integration)", "invalid_integration", "invalid_integration", 0, "no",
        hint="integration_missing",
    ),
]  # fmt: skip


@pytest.mark.parametrize("width", [80, 100, 160])
def test_every_column_shows_whole_values_within_the_width(width: int) -> None:
    out = io.StringIO()
    console = Console(file=out, width=width, soft_wrap=True)  # as `ogv` prints
    console.print(DemoReport(7, ROWS).table(console.width))
    lines = out.getvalue().splitlines()

    assert max(len(line) for line in lines) <= width
    text = out.getvalue()
    for row in ROWS:
        assert row.platform in text and str(row.outcome) in text  # never cut
    assert ("works on opsgenie-eu" in text) == (width >= 100)  # the note gives way first
