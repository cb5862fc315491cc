"""A hint for every failure: each code for its case, and the README's table of them."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from worker.platforms.hints import HINTS, Facts, hint_for
from worker.platforms.sunset import deadline

TODAY = date(2026, 12, 6)
US = "https://api.opsgenie.com/"
KEY = "0f6b2b1e-5c52-4b8e-9b55-3d3f6a2f7c11"
COMMON = dict(platform="opsgenie", base_url=US, organization_id=7, integration_id=12)
SOON = deadline(migrated_on=TODAY - timedelta(days=100))
GONE = deadline(switched_off_on=TODAY - timedelta(days=1))

CASES: dict[str, Facts] = {
    "integration_missing": Facts("invalid_integration", organization_id=7, integration_id=12),
    "integration_disabled": Facts(
        "invalid_integration", "integration_disabled", organization_id=7, integration_id=12
    ),
    "team_missing": Facts("invalid_team", organization_id=7, integration_id=12),
    "platform_retired": Facts("invalid_key", **COMMON, deadline=GONE, judged_on=TODAY),
    "malformed_key": Facts("invalid_key", "malformed_key", **COMMON, deadline=deadline()),
    "wrong_region": Facts("invalid_key", works_on=["opsgenie-eu"], **COMMON),
    "migrated_account": Facts("invalid_key", works_on=["jsm-ops"], **COMMON),
    "key_disabled_or_deleted": Facts("invalid_key", **COMMON, judged_on=TODAY),
    "wrong_key_type": Facts("key_lacks_access", "opsgenie_40301", **COMMON),
    "access_denied": Facts("key_lacks_access", "opsgenie_40300", **COMMON),
    "rejected": Facts("rejected", "opsgenie_40200", **COMMON),
    "rate_limited": Facts("error", "throttled", **COMMON),
    "not_the_platform": Facts("error", "unrecognised_answer", **COMMON, judged_on=TODAY),
    "platform_unreachable": Facts("error", "timeout", **COMMON),
    "base_url_not_allowed": Facts("error", "base_url_not_allowed", **COMMON),
    "key_unreadable": Facts("error", "undecryptable_key", **COMMON),
    "service_failed": Facts("error", "write_failed", **COMMON),
    "move_to_jsm_ops": Facts("valid", **COMMON, deadline=SOON, today=TODAY, jsm_ops="works"),
    "deadline_close": Facts("valid", **COMMON, deadline=SOON, today=TODAY, jsm_ops="unknown"),
}


def test_every_code_has_its_case() -> None:
    assert set(CASES) == set(HINTS)


@pytest.mark.parametrize("code", list(CASES))
def test_each_case_gets_its_code_and_a_sentence(code: str) -> None:
    hint = hint_for(CASES[code])
    assert hint is not None and hint.code == code
    assert hint.text.endswith(".") and "{" not in hint.text
    assert KEY not in hint.text


def test_the_sentences_name_the_place_and_the_command() -> None:
    region = hint_for(CASES["wrong_region"])
    retired = hint_for(CASES["platform_retired"])
    moving = hint_for(CASES["move_to_jsm_ops"])
    assert region is not None and "api.eu.opsgenie.com" in region.text
    assert "ogv integration add --org 7 --platform opsgenie-eu" in region.text
    assert retired is not None and GONE.on.isoformat() in retired.text
    assert "ogv integration migrate --integration 12 --to jsm-ops" in retired.text
    assert moving is not None and "(20 days)" in moving.text


def test_after_the_deadline_a_failing_answer_is_about_the_platform() -> None:
    for outcome, code in (("invalid_key", None), ("key_lacks_access", "opsgenie_40301")):
        before = Facts(outcome, code, **COMMON, deadline=GONE, judged_on=GONE.on - timedelta(1))
        after = Facts(outcome, code, **COMMON, deadline=GONE, judged_on=GONE.on)
        assert (hint_for(after) or HINT_NONE).code == "platform_retired"
        assert (hint_for(before) or HINT_NONE).code != "platform_retired"


HINT_NONE = hint_for(Facts("invalid_integration"))


def test_nothing_to_do_has_no_hint() -> None:
    far = deadline()
    assert hint_for(Facts("valid", **COMMON, deadline=far, today=TODAY)) is None
    assert hint_for(Facts("valid", platform="jsm-ops", integration_id=3)) is None
    assert hint_for(Facts(None)) is None
    assert hint_for(Facts("unknown", **COMMON)) is None


def test_the_readme_lists_every_code_with_its_meaning() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Hints\n")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", section, re.M))
    assert rows == {code: kind.meaning for code, kind in HINTS.items()}
