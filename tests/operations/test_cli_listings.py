"""`ogv status` and `ogv changes list` in-process on SQLite and PostgreSQL: the summary
first, filters, keyset pages in natural order, and one line per team or change.

Teams are written through `worker.inventory`; held changes through the real write
path (`records.finish_many` with a guard that trips on the third change over three
accounts), as the workers write them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import delete, update
from typer.testing import CliRunner

from models import GuardWindow, HeldChange, Outcome, Requester, Team, TeamStatus
from models.crypto import KeyVault
from models.db import session_factory
from worker import inventory
from worker.checks import records, requests
from worker.checks.guard import DatabaseWindows, Guard, Thresholds
from worker.checks.requests import Ask
from worker.checks.rules import Result, Target
from worker.operations.cli import app, checks
from worker.platforms import get_platform
from worker.platforms.sunset import WARN_DAYS, deadline
from worker.settings import Settings, get_settings

runner = CliRunner()
CHECKED = datetime(2025, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def cli(ogv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The CLI in-process on the test's database, writing for an 80-column terminal."""
    monkeypatch.setenv("OGV_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("OGV_BROKER_URL", "embedded")
    monkeypatch.setenv("OGV_ENCRYPTION_KEYS", settings.encryption_keys[0].get_secret_value())
    monkeypatch.setenv("COLUMNS", "80")
    get_settings.cache_clear()


def ogv(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout + result.stderr


def ogv_json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def new_org() -> int:
    return uuid.uuid4().int % 10**12 + 1


def add_teams(
    settings: Settings, org: int, labels: dict[str, TeamStatus], account: str = "acme"
) -> dict[str, str]:
    """Teams of one new integration of `org`, with these statuses, checked at CHECKED;
    label → team id."""
    vault = KeyVault(settings.fernet_keys())
    sessions = session_factory(settings.effective_database_url)
    with sessions.begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=account,
            base_url="https://api.opsgenie.com/",
            allowed_base_urls=["https://api.opsgenie.com/"],
        )
        ids = {
            label: inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=label,
                integration_key=f"key-{uuid.uuid4()}",
                vault=vault,
            ).id
            for label in labels
        }
        for label, status in labels.items():
            session.execute(
                update(Team)
                .where(Team.id == ids[label])
                .values(
                    status=status, last_checked_at=CHECKED if status.value != "unknown" else None
                )
            )
    return ids


# -- ogv status ------------------------------------------------------------------------------


FLEET = {
    "team-10": TeamStatus.VALID,
    "team-2": TeamStatus.INVALID_KEY,
    "team-1": TeamStatus.VALID,
    "alpha": TeamStatus.UNKNOWN,
    "team-007": TeamStatus.VALID,
    "team-9": TeamStatus.REJECTED,
}
"""Natural order: alpha, team-1, team-2, team-007, team-9, team-10."""


def test_status_counts_first_then_a_page_in_natural_order(cli: None, settings: Settings) -> None:
    org = new_org()
    ids = add_teams(settings, org, FLEET)
    with session_factory(settings.effective_database_url).begin() as session:
        session.execute(
            update(Team).where(Team.id == ids["team-2"]).values(last_error_code="invalid_key",
                                                                last_http_status=401)
        )  # fmt: skip

    code, first = ogv("status", "--org", str(org), "--limit", "4")
    cursor = first.splitlines()[-1].split("--after ")[1]
    code_2, second = ogv("status", "--org", str(org), "--limit", "4", "--after", cursor)

    assert (code, code_2) == (0, 0)
    listed = json.loads(ogv("status", "--org", str(org), "--json")[1])["teams"]
    hints = {t["label"]: f"{t['hint']['code']}: {t['hint']['text']}" for t in listed if t["hint"]}
    summary = "6 teams: 1 unknown, 3 valid, 1 invalid_key, 1 rejected"
    w = max(len(ids[label]) for label in ("alpha", "team-1", "team-2", "team-007"))
    assert org_lines(first) == [
        summary,
        f"{'team':<{w}}  status       checked           note",
        f"{ids['alpha']:<{w}}  unknown      -",
        f"{ids['team-1']:<{w}}  valid        2025-03-04 05:06",
        cut(
            f"{ids['team-2']:<{w}}  invalid_key  2025-03-04 05:06  invalid_key (HTTP 401); "
            + hints["team-2"]
        ),
        f"{ids['team-007']:<{w}}  valid        2025-03-04 05:06",
        f"next: ogv status --org {org} --limit 4 --after {cursor}",
    ]
    w = len(ids["team-10"])
    assert org_lines(second) == [
        summary,
        f"{'team':<{w}}  status    checked           note",
        cut(f"{ids['team-9']:<{w}}  rejected  2025-03-04 05:06  " + hints["team-9"]),
        f"{ids['team-10']:<{w}}  valid     2025-03-04 05:06",
    ]


def test_status_json_lists_every_team_in_natural_order_a_page_at_a_time(
    cli: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = new_org()
    ids = add_teams(settings, org, FLEET)
    monkeypatch.setattr(checks, "JSON_PAGE", 2)  # three queries for six teams

    everything = ogv_json("status", "--org", str(org))
    valid = ogv_json("status", "--org", str(org), "--status", "valid", "--status", "rejected")
    page = ogv_json("status", "--org", str(org), "--status", "valid", "--limit", "2")
    rest = ogv_json(
        "status", "--org", str(org), "--status", "valid", "--after", page["next_cursor"]
    )

    counts = {"unknown": 1, "valid": 3, "invalid_key": 1, "key_lacks_access": 0, "rejected": 1}
    order = ["alpha", "team-1", "team-2", "team-007", "team-9", "team-10"]
    assert set(everything) == {"summary", "teams", "next_cursor"}
    assert (everything["summary"], everything["next_cursor"]) == (counts, None)
    assert [t["team_id"] for t in everything["teams"]] == [ids[label] for label in order]
    days = deadline().days_left()
    assert everything["teams"][1] == {
        "deadline": deadline().on.isoformat(), "days_left": days,
        "hint": everything["teams"][1]["hint"] if days <= WARN_DAYS else None,
        "team_id": ids["team-1"], "organization_id": org,
        "integration_id": everything["teams"][1]["integration_id"], "account": "acme",
        "platform": "opsgenie", "probe": "authenticate", "label": "team-1", "key_version": 1,
        "status": "valid",
        "status_changed_at": None, "last_checked_at": CHECKED.isoformat(),
        "last_error_code": None, "last_http_status": None, "works_on": [], "jsm_ops": None,
        "jsm_ops_checked_at": None,
    }  # fmt: skip
    assert [t["label"] for t in valid["teams"]] == ["team-1", "team-007", "team-9", "team-10"]
    assert [t["label"] for t in page["teams"]] == ["team-1", "team-007"]
    assert page["next_cursor"] and page["summary"] == counts
    assert ([t["label"] for t in rest["teams"]], rest["next_cursor"]) == (["team-10"], None)


def test_status_json_of_an_organization_without_teams(cli: None) -> None:
    empty = ogv_json("status", "--org", str(new_org()))

    assert empty == {
        "summary": {s.value: 0 for s in TeamStatus},
        "teams": [],
        "next_cursor": None,
    }
    code, text = ogv("status", "--org", str(new_org()))
    assert (code, org_lines(text)) == (0, ["no teams"])


def test_status_keeps_one_line_per_team_at_80_columns(cli: None, settings: Settings) -> None:
    org = new_org()
    long_label = "payments-platform-oncall-" + "x" * 100
    ids = add_teams(settings, org, {long_label: TeamStatus.VALID, "ops": TeamStatus.VALID})
    with session_factory(settings.effective_database_url).begin() as session:
        session.execute(
            update(Team).where(Team.id == ids["ops"]).values(works_on="opsgenie-eu,jsm-ops")
        )

    code, text = ogv("status", "--org", str(org))

    # The note gives way to 24 cells, then the id: each ends in an ellipsis.
    assert (code, org_lines(text)) == (
        0,
        [
            "2 teams: 2 valid",
            f"{'team':<28}  status  checked           note",
            f"{ids['ops']:<28}  valid   2025-03-04 05:06  works on opsgenie-eu, j…",
            f"{ids[long_label][:27]}…  valid   2025-03-04 05:06",
        ],
    )
    assert ogv_json("status", "--org", str(org))["teams"][1]["label"] == long_label  # whole


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "broken"], "--status takes unknown, valid, invalid_key, key_lacks_access"),
        (["--limit", "0"], "--limit takes 1 to 10000"),
        (["--after", "!!"], "--after takes the next cursor"),
        (["--after", "bm90LWpzb24"], "--after takes the next cursor"),
        (["--after", "WzEsMiwzXQ"], "--after takes the next cursor"),
    ],
)
def test_status_refuses_bad_options_in_one_line(cli: None, args: list[str], message: str) -> None:
    code, text = ogv("status", *args)
    as_json = runner.invoke(app, ["status", *args, "--json"])

    assert code == 1 and len(text.splitlines()) == 1 and message in text
    assert json.loads(as_json.stdout)["error"]["code"] == "invalid"


labels = st.from_regex(r"[a-z]{1,3}(-?[0-9]{1,3})?", fullmatch=True)


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.sets(labels, min_size=1, max_size=12), size=st.integers(1, 5))
def test_paging_with_the_cursor_lists_every_team_once(
    cli: None, settings: Settings, names: set[str], size: int
) -> None:
    """Page by page with --after is the whole listing, in its order, whatever the labels."""
    org = new_org()
    add_teams(settings, org, dict.fromkeys(names, TeamStatus.VALID))
    whole = [t["team_id"] for t in ogv_json("status", "--org", str(org))["teams"]]
    paged: list[str] = []
    cursor: list[str] = []
    while True:
        page = ogv_json("status", "--org", str(org), "--limit", str(size), *cursor)
        paged += [t["team_id"] for t in page["teams"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--after", page["next_cursor"]]
    assert paged == whole and len(whole) == len(names)
    # Labels that differ only in their number come in numeric order.
    shown = [t.split("-", 1)[1] for t in whole]
    for stem in {label.rstrip("0123456789") for label in names}:
        numbers = [label[len(stem) :] for label in shown if label.rstrip("0123456789") == stem]
        assert numbers == sorted(numbers, key=lambda n: int(n) if n else -1)


# -- ogv changes list ------------------------------------------------------------------------


TRIPS_AFTER_THREE = Guard(
    0.0, Thresholds(window=600, threshold=0.1, min_changes=3), DatabaseWindows()
)
MESSAGE = "Key is not valid\n<html>\n  <body>upstream said no, at length: " + "x" * 300


def hold_changes(settings: Settings, org: int) -> str:
    """Three accounts of two valid teams each at a base URL of their own, each account
    installed by an organization of its own (`org` and the next two: the guard counts
    organizations), all answered 401 in one batch: two changes written, then four
    held. Returns the base URL."""
    base_url = f"http://held-{uuid.uuid4().hex[:10]}.test/"
    vault = KeyVault(settings.fernet_keys())
    sessions = session_factory(settings.effective_database_url)
    targets: list[tuple[Ask, Target]] = []
    with sessions.begin() as session:
        for a in range(3):
            account = f"acct-{a}"
            integration, _ = inventory.add_integration(
                session, organization_id=org + a, account_name=account, base_url=base_url,
                allowed_base_urls=[base_url],
            )  # fmt: skip
            for n in range(2):
                team = inventory.add_team(
                    session, organization_id=org + a, integration_id=integration.id,
                    label=f"t{a}-{n}", integration_key=f"key-{uuid.uuid4()}", vault=vault,
                )  # fmt: skip
                targets.append(
                    (
                        Ask(org + a, integration.id, team.id),
                        Target(
                            team.id,
                            team.label,
                            account,
                            integration.id,
                            base_url,
                            "unused",
                            1,
                            get_platform("opsgenie"),
                            "authenticate",
                            org + a,
                            TeamStatus.VALID,
                        ),
                    )
                )
        session.execute(
            update(Team).where(Team.id.in_([t.team_id for _, t in targets])).values(status="valid")
        )
    targets.sort(key=lambda pair: pair[1].label[::-1])  # one of each account, then the rest
    with sessions.begin() as session:
        asked = requests.create_requests(
            session, [ask for ask, _ in targets], requested_by=Requester.BEAT
        )
    now = datetime.now(UTC)
    completions = [
        records.Completion(  # in order: the guard counts them as they started
            asked[ask][0].id,
            Result(Outcome.INVALID_KEY, MESSAGE, 401),
            target,
            now - timedelta(milliseconds=len(targets) - n),
        )
        for n, (ask, target) in enumerate(targets)
    ]
    with sessions.begin() as session:
        written = records.finish_many(session, completions, TRIPS_AFTER_THREE)
    assert (len(written.changes), len(written.held)) == (2, 4)
    return base_url


def forget(settings: Settings, base_url: str) -> None:
    with session_factory(settings.effective_database_url).begin() as session:
        session.execute(delete(GuardWindow).where(GuardWindow.base_url == base_url))
        session.execute(delete(HeldChange).where(HeldChange.base_url == base_url))


def test_changes_list_sums_up_by_account_and_keeps_each_change_to_a_line(
    cli: None, settings: Settings
) -> None:
    base_url = hold_changes(settings, new_org())
    try:
        listed = ogv_json("changes", "list", "--base-url", base_url)
        limited = ogv_json("changes", "list", "--base-url", base_url, "--limit", "3")
        code, text = ogv("changes", "list", "--base-url", base_url, "--limit", "3")
    finally:
        forget(settings, base_url)

    held = sorted(h["team_id"] for h in listed["held"])
    accounts = {(a["account"], a["held"]) for a in listed["accounts"]}
    assert len(held) == 4 and sum(n for _, n in accounts) == 4
    assert {a["base_url"] for a in listed["accounts"]} == {base_url}
    assert [h["team_id"] for h in limited["held"]] == held[:3]
    assert limited["accounts"] == listed["accounts"] and limited["guard"] == listed["guard"]
    message = listed["held"][0]["message"]  # as the write path keeps it, whole in JSON
    assert message.startswith("Key is not valid") and len(message) > 300
    [guard] = listed["guard"]
    since = datetime.fromisoformat(guard["tripped_at"])
    by_account = sorted(listed["accounts"], key=lambda a: (-a["held"], a["account"]))
    assert listed["accounts"] == by_account  # most held first
    tw = max(len(t) for t in held[:3])

    held_at = {h["team_id"]: datetime.fromisoformat(h["held_at"]) for h in listed["held"]}

    def change(team_id: str) -> str:
        start = f"{team_id:<{tw}}  valid → invalid_key  {held_at[team_id]:%Y-%m-%d %H:%M}  "
        evidence = "HTTP 401, Key is not valid<html> <body>upstream said no, at length: " + "x" * 80
        return start + evidence[: 80 - len(start) - 1] + "…"

    assert code == 0
    assert text.splitlines() == [
        f"guard {base_url}: tripped since {since:%Y-%m-%d %H:%M:%S} UTC; window: 6 changes "
        f"of 6 checks, 3 organizations; 4 held",
        "4 held, by account:",
        f"  account  {'base URL':<{len(base_url)}}  held",
        *(f"  {a['account']:<7}  {base_url}  {a['held']}" for a in by_account),
        f"{'team':<{tw}}  change               held at           evidence",
        *(change(team_id) for team_id in held[:3]),
        "1 more held: raise --limit, or --json for all",
    ]


def cut(line: str, width: int = 80) -> str:
    """`line` as a terminal of `width` columns shows it: cut, with an ellipsis."""
    return line if len(line) <= width else line[: width - 1] + "…"


def org_lines(text: str) -> list[str]:
    """`ogv status` output without its fleet-wide notices (base URLs unavailable, guards
    tripped), which other tests on the session's database may have left behind."""
    return [line for line in text.splitlines() if not line.startswith(("platforms: ", "guard: "))]
