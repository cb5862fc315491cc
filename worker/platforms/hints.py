"""A fix for every failure: a stable code and one sentence that says what to do, and where.

Every outcome that is not `valid`, and a `valid` one with something to do (a key
on an Opsgenie account whose deadline is close), carries a hint. The code is
stable, for a product to translate; the sentence is for a person, and names the
screen, host or command. A hint is derived on read from what is stored (the
outcome or status, the error code, `works_on`, `jsm_ops`, the account's deadline):
no prose is stored, so a hint improves with the code without a migration.

A sentence is built from fixed text and names only: platform titles, host names
from the allowlist, ids and dates. Never a key, and never free text a user typed
(account names, labels), which could hold anything.

`HINTS` has every code with its meaning; the README's table is tested against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

from worker.platforms import PLATFORMS, get_platform
from worker.platforms.sunset import WARN_DAYS, Deadline


@dataclass(frozen=True)
class Kind:
    """One hint code: what it means (the README's table) and its sentence's template."""

    meaning: str
    template: str


HINTS: dict[str, Kind] = {
    "integration_missing": Kind(
        "the organization has no link to the integration",
        "Install the account for this organization (ogv integration add --org {organization} "
        "...) or ask about an integration it has; ogv status --org {organization} lists them.",
    ),
    "integration_disabled": Kind(
        "the organization's link to the integration is disabled",
        "Enable integration {integration} for organization {organization} (ogv integration "
        "enable --org {organization} --integration {integration}, or PATCH its "
        '/v1/organizations/{organization}/integrations/{integration} with status "active") '
        "to check its teams again.",
    ),
    "team_missing": Kind(
        "the team id is not a team of that integration",
        "Use a team id of integration {integration} (they look like 2-payments); "
        "ogv status --org {organization} lists them.",
    ),
    "platform_retired": Kind(
        "an Opsgenie account's deadline has passed: its failing answers say nothing about the key",
        "Opsgenie stopped for this account on {deadline}: create an integration in Jira "
        "Service Management (Operations > Integrations) and move integration {integration} "
        "there with ogv integration migrate --integration {integration} --to jsm-ops.",
    ),
    "malformed_key": Kind(
        "the platform refused the key's format: it can never work anywhere",
        "Copy the API key again from {title} (Settings > Integrations > the integration > "
        "API key) and save it whole, without spaces or quotes.",
    ),
    "wrong_region": Kind(
        "401 here, but the key works on Opsgenie's other region",
        "The key belongs to {other_title} ({other_host}): install the account there with "
        "ogv integration add --org {organization} --platform {other} and add the team to it.",
    ),
    "migrated_account": Kind(
        "401 on Opsgenie, but the key works on JSM Operations: the account has moved",
        "The account has moved to JSM Operations ({jsm_host}): move integration "
        "{integration} with ogv integration migrate --integration {integration} --to jsm-ops.",
    ),
    "key_disabled_or_deleted": Kind(
        "401: the platform does not know the key, or its integration is disabled",
        "In {title} ({host}), open Settings > Integrations, check that the integration is "
        "enabled, and copy its API key again; a deleted integration needs a new one.",
    ),
    "wrong_key_type": Kind(
        "403 with code 40301: the key is not an API integration's key with configuration access",
        "Use the API key of an API integration in {title} (Settings > Integrations > API) "
        "with 'Enable configuration access' on, or check this key with the alerts probe.",
    ),
    "access_denied": Kind(
        "403: the platform knows the key but does not allow the check",
        "In {title} ({host}), give the integration access to alerts (Settings > "
        "Integrations > the integration > Access), or use the key of an API integration.",
    ),
    "rejected": Kind(
        "another answer of the platform's own (402, 409, 422...), with its message",
        "Read {title}'s message on the check: a 402 means the account's plan does not "
        "allow the integration (Settings > Billing).",
    ),
    "rate_limited": Kind(
        "429s kept coming until attempts ran out; the team's status is unchanged",
        "{title} kept throttling this account: lower OGV_ACCOUNT_RATE (or its per-probe "
        "override) or spread re-validation over a longer OGV_DISPATCH_WINDOW; it is "
        "checked again at the next run.",
    ),
    "not_the_platform": Kind(
        "the answers were not the platform's own (a proxy, captive portal or retired host)",
        "Something between this service and {host} answers instead of {title}: check the "
        "proxy or firewall on the way there (ogv platforms shows each host); the team's "
        "status is unchanged.",
    ),
    "platform_unreachable": Kind(
        "5xx, timeouts or connection failures until attempts ran out",
        "{host} did not answer: check this service's network path to it and "
        "status.atlassian.com; the team's status is unchanged and it is checked again "
        "at the next run.",
    ),
    "base_url_not_allowed": Kind(
        "the account's base URL is no longer on the allowlist; the key was not sent",
        "Add {host}'s base URL to OGV_ALLOWED_BASE_URLS, or move the integration to an "
        "allowed host.",
    ),
    "key_unreadable": Kind(
        "the stored key cannot be decrypted with the configured encryption keys",
        "Add the encryption key it was stored with to OGV_ENCRYPTION_KEYS (ogv keys "
        "rotate re-encrypts), or save the team's key again with ogv team replace-key "
        "--team TEAM_ID.",
    ),
    "service_failed": Kind(
        "this service failed to probe or write the check (a database or Redis failure)",
        "This service could not finish the check: run ogv health and read the worker's "
        "log; the team's status is unchanged.",
    ),
    "move_to_jsm_ops": Kind(
        "valid, and the key works on JSM Operations, while the account's deadline is "
        "30 days away or less",
        "Opsgenie stops for this account on {deadline} ({days_left} days): the key "
        "already works on JSM Operations, so move integration {integration} now with "
        "ogv integration migrate --integration {integration} --to jsm-ops.",
    ),
    "deadline_close": Kind(
        "valid, but the account's deadline is 30 days away or less and the key is not "
        "known to work on JSM Operations",
        "Opsgenie stops for the account of integration {integration} on {deadline} "
        "({days_left} days): migrate it to Jira Service Management, then run ogv migration "
        "report to see which keys work there.",
    ),
}
"""Every hint code, in the order of the README's table."""

FAILING = frozenset({"invalid_key", "key_lacks_access", "rejected"})
"""The outcomes (and team statuses) that say a key does not work."""

ERROR_HINTS: dict[str, str] = {
    "throttled": "rate_limited",
    "account_paused": "rate_limited",
    "unrecognised_answer": "not_the_platform",
    "server_error": "platform_unreachable",
    "timeout": "platform_unreachable",
    "connection_error": "platform_unreachable",
    "dns_error": "platform_unreachable",
    "network_error": "platform_unreachable",
    "base_url_not_allowed": "base_url_not_allowed",
    "undecryptable_key": "key_unreadable",
}
"""The hint of an `error` outcome by its error code; any other code is `service_failed`."""


@dataclass(frozen=True)
class Hint:
    """A stable code, and one sentence for a person: what to do, and where."""

    code: str
    """Stable, for a product to translate (the README's table of codes)."""
    text: str
    """One sentence that names the screen, host or command; never a key."""

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}


@dataclass(frozen=True)
class Facts:
    """What a hint is derived from: a request's or a team's stored answer, and its account."""

    outcome: str | None
    """A request's outcome, or a team's status (`unknown` and None have no hint)."""
    error_code: str | None = None
    works_on: Sequence[str] = ()
    platform: str | None = None
    base_url: str | None = None
    organization_id: int | None = None
    integration_id: int | None = None
    deadline: Deadline | None = None
    """The account's deadline, on an Opsgenie platform; None elsewhere."""
    judged_on: date | None = None
    """The day of the answer (a request's end, a team's status change)."""
    today: date | None = None
    """The day the hint is read on (default: today, UTC): for the days left."""
    jsm_ops: str | None = None


def hint_for(facts: Facts) -> Hint | None:
    """The hint of `facts`, or None when there is nothing to do."""
    code = _code(facts)
    return Hint(code, _sentence(code, facts)) if code is not None else None


def _code(facts: Facts) -> str | None:
    outcome = facts.outcome
    if outcome == "invalid_integration":
        disabled = facts.error_code == "integration_disabled"
        return "integration_disabled" if disabled else "integration_missing"
    if outcome == "invalid_team":
        return "team_missing"
    if _retired(facts):
        return "platform_retired"
    if outcome == "error":
        return ERROR_HINTS.get(facts.error_code or "", "service_failed")
    if outcome in FAILING:
        return _failing(facts)
    close = facts.deadline is not None and facts.deadline.days_left(facts.today) <= WARN_DAYS
    if outcome == "valid" and close:
        return "move_to_jsm_ops" if facts.jsm_ops == "works" else "deadline_close"
    return None


def _retired(facts: Facts) -> bool:
    """A failing answer (or a host that stopped answering like Opsgenie) from an Opsgenie
    account on or after its deadline: about the platform, not the key."""
    if facts.deadline is None or facts.judged_on is None:
        return False
    failing = facts.outcome in FAILING or (
        facts.outcome == "error" and facts.error_code == "unrecognised_answer"
    )
    return failing and facts.deadline.passed(facts.judged_on)


def _failing(facts: Facts) -> str:
    if facts.error_code == "malformed_key":
        return "malformed_key"
    if facts.outcome == "invalid_key":
        other = _other_region(facts)
        if other is not None:
            return "wrong_region"
        if "jsm-ops" in facts.works_on:
            return "migrated_account"
        return "key_disabled_or_deleted"
    if facts.outcome == "key_lacks_access":
        return "wrong_key_type" if facts.error_code == "opsgenie_40301" else "access_denied"
    return "rejected"


def _other_region(facts: Facts) -> str | None:
    for name in facts.works_on:
        platform = PLATFORMS.get(name)
        if platform is not None and platform.is_opsgenie and name != facts.platform:
            return name
    return None


def _host(base_url: str | None) -> str:
    return (urlsplit(base_url).hostname or "the platform's host") if base_url else "its host"


def _sentence(code: str, facts: Facts) -> str:
    platform = PLATFORMS.get(facts.platform or "")
    other = _other_region(facts)
    jsm = get_platform("jsm-ops")
    names = {
        "title": platform.title if platform else "the platform",
        "host": _host(facts.base_url),
        "organization": facts.organization_id if facts.organization_id is not None else "N",
        "integration": facts.integration_id if facts.integration_id is not None else "ID",
        "deadline": facts.deadline.on.isoformat() if facts.deadline else "its deadline",
        "days_left": facts.deadline.days_left(facts.today) if facts.deadline else "?",
        "other": other or "opsgenie-eu",
        "other_title": PLATFORMS[other].title if other else "Opsgenie's other region",
        "other_host": _host(PLATFORMS[other].official_base_url) if other else "its host",
        "jsm_host": _host(jsm.official_base_url),
    }
    return HINTS[code].template.format(**names)


__all__ = ["ERROR_HINTS", "HINTS", "Facts", "Hint", "Kind", "hint_for"]
