"""Opsgenie's EU region: `https://api.eu.opsgenie.com/`; EU accounts must use it."""

from __future__ import annotations

from worker.platforms.base import Platform
from worker.platforms.opsgenie import OPSGENIE_END_OF_SUPPORT

OPSGENIE_EU = Platform(
    name="opsgenie-eu",
    title="Opsgenie (EU)",
    official_base_url="https://api.eu.opsgenie.com/",
    base_url_setting="OGV_OPSGENIE_EU_BASE_URL",
    probes=("authenticate", "alerts"),
    default_probe=None,
    end_of_support=OPSGENIE_END_OF_SUPPORT,
    locate_on=("opsgenie", "jsm-ops"),
)
