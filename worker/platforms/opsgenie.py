"""Opsgenie's US region: `https://api.opsgenie.com/`, supported until 2027-04-05."""

from __future__ import annotations

from datetime import date

from worker.platforms.base import Platform

OPSGENIE_END_OF_SUPPORT = date(2027, 4, 5)

OPSGENIE = Platform(
    name="opsgenie",
    title="Opsgenie",
    official_base_url="https://api.opsgenie.com/",
    base_url_setting="OGV_OPSGENIE_BASE_URL",
    probes=("authenticate", "alerts"),
    default_probe=None,
    end_of_support=OPSGENIE_END_OF_SUPPORT,
    locate_on=("opsgenie-eu", "jsm-ops"),
)
