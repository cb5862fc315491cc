"""Jira Service Management Operations, Opsgenie's successor (SPEC §7).

Its integration API takes the same `GenieKey` header and `v2/...` paths as
Opsgenie's, but has no `v2/integrations/authenticate`: a key is checked with
the read-only `GET v2/alerts?limit=1`. No EU host is documented.
"""

from __future__ import annotations

from worker.platforms.base import Platform

JSM_OPS = Platform(
    name="jsm-ops",
    title="JSM Operations",
    official_base_url="https://api.atlassian.com/jsm/ops/integration/",
    base_url_setting="OGV_JSM_OPS_BASE_URL",
    probes=("alerts",),
    default_probe="alerts",
)
