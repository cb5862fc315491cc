"""The platforms a key can be checked on, one module each, and what they have in common.

A platform says where its integration API lives, which probes it answers and
which it uses by default, and which answers are its own. Only an answer the
platform recognises as its own becomes a verdict about a key (SPEC §6):
a redirect to a login page, a proxy's HTML page or a retired host's 410 says
nothing about the key.

    opsgenie      Opsgenie, US region        worker/platforms/opsgenie.py
    opsgenie-eu   Opsgenie, EU region        worker/platforms/opsgenie_eu.py
    jsm-ops       JSM Operations             worker/platforms/jsm_ops.py

A fourth platform is one more module that builds a `Platform`, and one line in
`PLATFORMS`.
"""

from __future__ import annotations

from worker.platforms.base import Platform, PlatformName, ProbeName, UnknownPlatform
from worker.platforms.jsm_ops import JSM_OPS
from worker.platforms.opsgenie import OPSGENIE
from worker.platforms.opsgenie_eu import OPSGENIE_EU

PLATFORMS: dict[str, Platform] = {p.name: p for p in (OPSGENIE, OPSGENIE_EU, JSM_OPS)}
"""Every platform by name, in the order operators see them."""


def get_platform(name: str) -> Platform:
    """The platform called `name`, or raise UnknownPlatform naming the known ones."""
    try:
        return PLATFORMS[name]
    except KeyError:
        known = ", ".join(PLATFORMS)
        raise UnknownPlatform(f"unknown platform {name!r}; use one of: {known}") from None


__all__ = [
    "JSM_OPS",
    "OPSGENIE",
    "OPSGENIE_EU",
    "PLATFORMS",
    "Platform",
    "PlatformName",
    "ProbeName",
    "UnknownPlatform",
    "get_platform",
]
