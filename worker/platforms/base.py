"""What a platform declares, and how an answer is recognised as the platform's own.

Opsgenie and JSM Operations share one answer format (SPEC §4 to §7):

- success of `authenticate`: a JSON object with a string `result`;
- success of `alerts`: a JSON object with a `data` list;
- an error: a JSON object with a string `message`, and `took` or `requestId`.

An answer is the platform's own only when its body has the documented shape
*and* its status is one the platform documents for the probe's path. 404 and 410
on a probe path, 408, 3xx, HTML and empty bodies are never its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

ProbeName = Literal["authenticate", "alerts"]
PlatformName = Literal["opsgenie", "opsgenie-eu", "jsm-ops"]

SUCCESS_FIELD: dict[ProbeName, tuple[str, type]] = {
    "authenticate": ("result", str),
    "alerts": ("data", list),
}
"""The field, and its type, that a success body of each probe carries."""

OPSGENIE_API_STATUSES = frozenset({200, 201, 202, 400, 401, 402, 403, 409, 422, 429, 501})
"""The statuses the Opsgenie integration API documents for its calls, bar 5xx."""


class UnknownPlatform(ValueError):
    """Raised when a platform name is none of `worker.platforms.PLATFORMS`."""

    code = "unknown_platform"


@dataclass(frozen=True)
class Platform:
    """One upstream that answers integration-key probes."""

    name: PlatformName
    title: str
    """How messages name it: "Opsgenie", "JSM Operations"."""
    official_base_url: str
    base_url_setting: str
    """The environment variable that overrides `official_base_url` (tests, proxies)."""
    probes: tuple[ProbeName, ...]
    default_probe: ProbeName | None
    """None: the deployment's `OGV_PROBE` decides."""
    statuses: frozenset[int] = OPSGENIE_API_STATUSES
    end_of_support: date | None = None
    """When the vendor stops supporting it: its keys should move before then."""
    locate_on: tuple[PlatformName, ...] = field(default=())
    """Where to look for a key this platform refuses: it may belong there instead."""

    @property
    def is_opsgenie(self) -> bool:
        return self.end_of_support is not None

    def probe_for(self, stored: str | None, configured: ProbeName) -> ProbeName:
        """The probe a check uses: the integration's own, else the platform's default."""
        for probe in self.probes:
            if probe == stored:
                return probe
        if self.default_probe is not None:
            return self.default_probe
        return configured if configured in self.probes else self.probes[0]

    def recognises(self, probe: ProbeName, status: int, body: Mapping[str, Any] | None) -> bool:
        """True when (`status`, `body`) is an answer this platform gives to `probe`."""
        if body is None or status not in self.statuses:
            return False
        if 200 <= status < 300:
            name, kind = SUCCESS_FIELD[probe]
            return isinstance(body.get(name), kind)
        return isinstance(body.get("message"), str) and ("took" in body or "requestId" in body)


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is anything else (HTML, empty, a list)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # nested past the parser's limit: not an answer
        return None
    return parsed if isinstance(parsed, dict) else None
