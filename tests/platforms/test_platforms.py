"""The platforms: what each declares, and which answers each recognises as its own."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict

from models.base import Outcome
from worker.checks.opsgenie import UnrecognisedAnswer, classify
from worker.inventory import PlatformChoiceError, choose_platform
from worker.platforms import (
    JSM_OPS,
    OPSGENIE,
    OPSGENIE_EU,
    PLATFORMS,
    Platform,
    ProbeName,
    UnknownPlatform,
    get_platform,
)
from worker.platforms.base import json_object

META = {"took": 0.004, "requestId": "5c3a"}
AUTH_OK = {"result": "Request will be processed", **META}
ALERTS_OK = {"data": [], **META}
ERROR = {"message": "Key is not recognised", **META}
HTML = "<html><head><title>Sign in</title></head><body>...</body></html>"

# (status, body, probe) -> recognised? Same table for every platform that answers the
# probe: they share one answer format (SPEC §6).
ANSWERS: list[tuple[str, int, Any, ProbeName, bool]] = [
    ("authenticate success", 200, AUTH_OK, "authenticate", True),
    ("alerts success", 200, ALERTS_OK, "alerts", True),
    (
        "JSM's write answer",
        202,
        {"result": "Request will be processed", **META},
        "authenticate",
        True,
    ),
    ("success body of the other probe", 200, ALERTS_OK, "authenticate", False),
    ("alerts body with data not a list", 200, {"data": {}, **META}, "alerts", False),
    ("empty 200", 200, "", "alerts", False),
    ("captive portal", 200, HTML, "authenticate", False),
    ("401 error", 401, ERROR, "alerts", True),
    ("403 with code", 403, {**ERROR, "code": 40301}, "authenticate", True),
    ("422 malformed key", 422, {"message": "Key format is not valid!", **META}, "alerts", True),
    ("402 plan", 402, ERROR, "alerts", True),
    ("401 without took or requestId", 401, {"message": "no"}, "alerts", False),
    ("401 HTML", 401, HTML, "alerts", False),
    ("302 to a login page", 302, "", "authenticate", False),
    ("nginx 404", 404, "<html><body><h1>404 Not Found</h1></body></html>", "alerts", False),
    ("404 in Opsgenie's JSON", 404, ERROR, "alerts", False),
    ("410 feature deprecated", 410, {"message": "deprecated", **META}, "authenticate", False),
    ("408 from a load balancer", 408, HTML, "alerts", False),
]


def _encoded(body: Any) -> bytes:
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


@pytest.mark.parametrize(
    ("platform", "status", "body", "probe", "recognised"),
    [
        pytest.param(platform, *row[1:], id=f"{platform.name}: {row[0]}")
        for platform in PLATFORMS.values()
        for row in ANSWERS
        if row[3] in platform.probes  # JSM Ops has no authenticate to recognise
    ],
)
def test_each_platform_recognises_only_its_own_answers(
    platform: Platform, status: int, body: Any, probe: ProbeName, recognised: bool
) -> None:
    raw = _encoded(body)

    assert platform.recognises(probe, status, json_object(raw)) is recognised
    if recognised:
        assert classify(status, CIMultiDict(), raw, platform, probe).http_status == status
    else:
        with pytest.raises(UnrecognisedAnswer):
            classify(status, CIMultiDict(), raw, platform, probe)


def test_the_platforms_declare_their_hosts_and_probes() -> None:
    declared = {
        name: (p.official_base_url, p.probes, p.default_probe, p.base_url_setting)
        for name, p in PLATFORMS.items()
    }

    assert declared == {
        "opsgenie": (
            "https://api.opsgenie.com/",
            ("authenticate", "alerts"),
            None,
            "OGV_OPSGENIE_BASE_URL",
        ),
        "opsgenie-eu": (
            "https://api.eu.opsgenie.com/",
            ("authenticate", "alerts"),
            None,
            "OGV_OPSGENIE_EU_BASE_URL",
        ),
        "jsm-ops": (
            "https://api.atlassian.com/jsm/ops/integration/",
            ("alerts",),
            "alerts",
            "OGV_JSM_OPS_BASE_URL",
        ),
    }
    assert (OPSGENIE.is_opsgenie, OPSGENIE_EU.is_opsgenie, JSM_OPS.is_opsgenie) == (
        True,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("platform", "stored", "configured", "expected"),
    [
        (OPSGENIE, None, "authenticate", "authenticate"),
        (OPSGENIE, None, "alerts", "alerts"),
        (OPSGENIE, "alerts", "authenticate", "alerts"),
        (OPSGENIE_EU, "authenticate", "alerts", "authenticate"),
        (JSM_OPS, None, "authenticate", "alerts"),  # OGV_PROBE is for Opsgenie only
        (JSM_OPS, "authenticate", "authenticate", "alerts"),  # never a probe it lacks
    ],
)
def test_the_probe_is_the_integrations_else_the_platforms_default(
    platform: Platform, stored: str | None, configured: ProbeName, expected: str
) -> None:
    assert platform.probe_for(stored, configured) == expected


def test_a_jsm_ops_key_is_judged_like_an_opsgenie_one() -> None:
    raw = _encoded({"message": "Key format is not valid!", **META})

    verdict = classify(422, CIMultiDict(), raw, JSM_OPS, "alerts")

    assert (verdict.outcome, verdict.reason) == (Outcome.INVALID_KEY, "malformed_key")


def test_an_unknown_platform_names_the_known_ones() -> None:
    with pytest.raises(UnknownPlatform, match="opsgenie, opsgenie-eu, jsm-ops"):
        get_platform("pagerduty")


OFFICIAL = {name: p.official_base_url for name, p in PLATFORMS.items()}
EU_SPELLED, PROXY = "https://API.eu.opsgenie.com", "https://proxy.example/og/"


@pytest.mark.parametrize(
    ("platform", "base_url", "probe", "expected"),
    [
        (None, None, None, ("opsgenie", "https://api.opsgenie.com/", None)),
        ("jsm-ops", None, None, ("jsm-ops", OFFICIAL["jsm-ops"], None)),
        (None, EU_SPELLED, "alerts", ("opsgenie-eu", EU_SPELLED, "alerts")),
        ("opsgenie", PROXY, "authenticate", ("opsgenie", PROXY, "authenticate")),
    ],
)
def test_choose_platform_fills_in_what_was_not_said(
    platform: str | None, base_url: str | None, probe: str | None, expected: tuple[str, str, str]
) -> None:
    chosen, url, chosen_probe = choose_platform(platform, base_url, probe, OFFICIAL)

    assert (chosen.name, url, chosen_probe) == expected


@pytest.mark.parametrize(
    ("platform", "base_url", "probe", "message"),
    [
        (None, PROXY, None, "say which platform it serves with --platform"),
        ("jsm-ops", None, "authenticate", "JSM Operations answers only the alerts probe"),
        ("statuspage", None, None, "unknown platform 'statuspage'"),
    ],
)
def test_choose_platform_refuses_what_does_not_fit(
    platform: str | None, base_url: str | None, probe: str | None, message: str
) -> None:
    with pytest.raises(PlatformChoiceError, match=message):
        choose_platform(platform, base_url, probe, OFFICIAL)


def test_json_nested_past_the_parsers_limit_is_no_answer() -> None:
    deep = b"[" * 20_000 + b"]" * 20_000

    assert json_object(deep) is None
    with pytest.raises(UnrecognisedAnswer):
        classify(401, CIMultiDict(), deep, OPSGENIE, "alerts")
