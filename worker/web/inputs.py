"""What the API takes in: its query parameters, headers and body, read and refused.

Each input is checked with the pattern and limit defined here (or beside the model
that owns the format: `models.integration`, `worker.cursors`), and the OpenAPI
document publishes the same ones, so the two say the same. A refusal is an
`invalid_request` (422) whose message never echoes the input: it could be a key
pasted into the wrong field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard, get_args

from aiohttp import web
from multidict import MultiMapping

from models import IntegrationStatus, TeamStatus
from models.integration import (
    ACCOUNT_MAX,
    BASE_URL_MAX,
    BIGINT_MAX,
    IDEMPOTENCY_KEY_MAX,
    INTEGER_MAX,
    LABEL_MAX,
    LABEL_PATTERN,
    TEAM_ID_MAX,
    TEAM_ID_PATTERN,
)
from worker import audit, cursors
from worker.inventory import KEY_MAX, KEY_PATTERN
from worker.platforms import PLATFORMS, ProbeName
from worker.web.errors import ApiError, malformed

BODY_LIMIT = 16 * 1024
# Printable ASCII; HTTP drops spaces around a header value, so none can start or end it.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
# How `?wait=` is written: a decimal number, optionally with an exponent; never a sign.
DECIMAL_PATTERN = r"^[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"
# How ids and `limit` are written in a path or a query: decimal digits only.
DIGITS_PATTERN = r"^[0-9]+$"
# A base URL as the service stores it (`integrations.base_url`); a filter, compared as
# it is: one that names no base URL matches nothing.
BASE_URL_PATTERN = r"^https?://[\x21-\x7e]+$"
# `?since=` of the audit log: a date, or a date and time, with an optional offset.
SINCE_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)

_TEAM_ID = re.compile(TEAM_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_DECIMAL = re.compile(DECIMAL_PATTERN)
_DIGITS = re.compile(DIGITS_PATTERN)
_BASE_URL = re.compile(BASE_URL_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)
_KEY_FORMAT = re.compile(KEY_PATTERN)
PROBES: tuple[str, ...] = get_args(ProbeName)
_SINCE = re.compile(SINCE_PATTERN)


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


@dataclass(frozen=True)
class Submission:
    """The body of `POST /v1/validations`: which team's key to check."""

    organization_id: int
    integration_id: int
    team_id: str


def _int_field(body: Mapping[str, Any], name: str, maximum: int) -> int:
    value = body.get(name)
    if type(value) is not int or not 1 <= value <= maximum:
        raise invalid(f"{name} must be an integer from 1 to {maximum}")
    return value


def is_team_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a team id as the document defines it (`TEAM_ID_PATTERN`)."""
    return (
        isinstance(value, str)
        and len(value) <= TEAM_ID_MAX
        and _TEAM_ID.fullmatch(value) is not None
    )


def bad_team_id() -> ApiError:
    # Never the value: a key pasted into the field must not come back, here or in a log.
    return invalid(
        "team_id must be <organization_integration_id>-<label>, at most "
        f"{TEAM_ID_MAX} characters, as `ogv team add` printed it"
    )


def parse_submission(body: Any) -> Submission:
    """The body's three fields, each exactly as the document's `ValidationInput` says."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    fields = {"organization_id", "integration_id", "team_id"}
    if set(body) - fields:
        raise invalid("unknown fields; the fields are organization_id, integration_id, team_id")
    team_id = body.get("team_id")
    if not is_team_id(team_id):
        raise bad_team_id()
    return Submission(
        organization_id=_int_field(body, "organization_id", BIGINT_MAX),
        integration_id=_int_field(body, "integration_id", INTEGER_MAX),
        team_id=team_id,
    )


def _only(query: MultiMapping[str], allowed: set[str]) -> None:
    if set(query) - allowed:
        raise invalid(f"unknown query parameters; allowed: {', '.join(sorted(allowed))}")
    for name in allowed:
        if len(query.getall(name, [])) > 1:
            raise invalid(f"{name} is given more than once")


def parse_wait(query: MultiMapping[str], cap: float) -> float:
    """`?wait=SECONDS`: 0 when absent, at most `cap`; written as `DECIMAL_PATTERN` says.

    Not float() alone: it also reads " 1", "1_0", "inf" and Arabic-Indic digits, which
    the document does not call numbers. A literal too large for a float (1e999) is
    simply over `cap`.
    """
    _only(query, {"wait"})
    raw = query.get("wait")
    if raw is None:
        return 0.0
    if not _DECIMAL.fullmatch(raw):
        raise invalid("wait must be a number of seconds, such as 5 or 0.5")
    return min(float(raw), cap)


def parse_idempotency_key(request: web.Request) -> str | None:
    """The header's one value, printable ASCII of 1 to `IDEMPOTENCY_KEY_MAX` characters."""
    keys = request.headers.getall("Idempotency-Key", [])
    if not keys:
        return None
    key = keys[0]
    if len(keys) > 1 or len(key) > IDEMPOTENCY_KEY_MAX or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid(
            f"Idempotency-Key must be one value of 1 to {IDEMPOTENCY_KEY_MAX} printable "
            "ASCII characters"
        )
    return key


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"the body is over {BODY_LIMIT} bytes") from None
    except (web.RequestPayloadError, ConnectionError):
        # Broken chunks or Content-Encoding, or a client gone mid-body: its fault, not a
        # bug, and the parser's message quotes the body.
        raise malformed() from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None


def parse_integer(raw: str, maximum: int) -> int | None:
    """`raw` as an integer from 1 to `maximum`, or None: ASCII digits only (`DIGITS_PATTERN`).

    Not str.isdigit(): it is true of "¹" and "٣", which int() refuses or reads. Leading
    zeros are dropped before the length is checked, so "007" is 7 and a thousand
    digits never reach int().
    """
    if not _DIGITS.fullmatch(raw):
        return None
    digits = raw.lstrip("0")
    if not digits or len(digits) > len(str(maximum)) or int(digits) > maximum:
        return None
    return int(digits)


@dataclass(frozen=True)
class PageQuery:
    status: TeamStatus | None
    limit: int
    cursor: str | None


def parse_page_query(query: MultiMapping[str]) -> PageQuery:
    """`?status=&limit=&cursor=`, each as the document says; nothing else, nothing twice."""
    _only(query, {"status", "limit", "cursor"})
    status = query.get("status")
    if status is not None and status not in TeamStatus._value2member_map_:
        raise invalid(f"status must be one of {', '.join(s.value for s in TeamStatus)}")
    limit, cursor = _page_bounds(query)
    return PageQuery(TeamStatus(status) if status is not None else None, limit, cursor)


def _page_bounds(query: MultiMapping[str]) -> tuple[int, str | None]:
    """`?limit=&cursor=` of a page keyed by team id, as the document says."""
    limit = parse_integer(query.get("limit", str(cursors.DEFAULT_PAGE)), cursors.MAX_PAGE)
    if limit is None:
        raise invalid(f"limit must be an integer from 1 to {cursors.MAX_PAGE}")
    cursor = query.get("cursor")
    if cursor is not None:
        try:
            cursors.decode_cursor(cursor)
        except cursors.BadCursor as exc:
            raise invalid(str(exc)) from None
    return limit, cursor


@dataclass(frozen=True)
class HeldQuery:
    base_url: str | None
    limit: int
    cursor: str | None


def parse_held_query(query: MultiMapping[str]) -> HeldQuery:
    """`?base_url=&limit=&cursor=`: the base URL as `GET /v1/guard` lists it, and a page
    as the teams' pages take it."""
    _only(query, {"base_url", "limit", "cursor"})
    base_url = query.get("base_url")
    if base_url is not None and (len(base_url) > BASE_URL_MAX or not _BASE_URL.fullmatch(base_url)):
        raise invalid(
            f"base_url must be an http(s) URL of at most {BASE_URL_MAX} printable ASCII "
            "characters, as GET /v1/guard lists it"
        )
    return HeldQuery(base_url, *_page_bounds(query))


def parse_organization_id(raw: str) -> int:
    organization_id = parse_integer(raw, BIGINT_MAX)
    if organization_id is None:
        raise invalid(f"the organization id must be an integer from 1 to {BIGINT_MAX}")
    return organization_id


def parse_since(raw: str) -> datetime:
    """`?since=`: an ISO 8601 date or date and time (`SINCE_PATTERN`), UTC unless it says."""
    try:
        when = datetime.fromisoformat(raw) if _SINCE.fullmatch(raw) else None
    except ValueError:
        when = None
    if when is None:
        raise invalid("since must be an ISO 8601 date or date and time, such as 2027-01-31T12:00Z")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_audit_query(query: MultiMapping[str]) -> audit.Query:
    """`?organization_id=&action=&since=&limit=&cursor=` of `GET /v1/audit`."""
    _only(query, {"organization_id", "action", "since", "limit", "cursor"})
    org, action, since = (query.get(name) for name in ("organization_id", "action", "since"))
    if action is not None and action not in audit.ACTIONS:
        raise invalid(f"action must be one of {', '.join(audit.ACTIONS)}")
    limit = parse_integer(query.get("limit", str(audit.DEFAULT_PAGE)), audit.MAX_PAGE)
    if limit is None:
        raise invalid(f"limit must be an integer from 1 to {audit.MAX_PAGE}")
    cursor = query.get("cursor")
    before = parse_integer(cursor, INTEGER_MAX) if cursor is not None else None
    if cursor is not None and before is None:
        raise invalid("cursor must be the next_cursor of the page before")
    return audit.Query(
        organization_id=parse_organization_id(org) if org is not None else None,
        action=action,
        since=parse_since(since) if since is not None else None,
        limit=limit,
        before=before,
    )


# -- integrations and teams --------------------------------------------------------------

_ACCOUNT = "account"
_KEY = "integration_key"


@dataclass(frozen=True)
class IntegrationInput:
    """The body of `POST /v1/organizations/{organization_id}/integrations`."""

    account: str
    """The account's name, as in acme.app.opsgenie.com; spaces at either end are dropped."""
    platform: str | None = None
    """Where the account lives; null: named by `base_url`, else `opsgenie`."""
    base_url: str | None = None
    """The API base URL; null: the platform's. Another must be on OGV_ALLOWED_BASE_URLS."""
    probe: str | None = None
    """How its keys are checked; null: the platform's default."""


@dataclass(frozen=True)
class IntegrationChange:
    """The body of `PATCH /v1/organizations/{organization_id}/integrations/{integration_id}`."""

    status: str
    """`disabled`: checks of its teams end `invalid_integration`; `active` again."""


@dataclass(frozen=True)
class TeamInput:
    """The body of `POST .../integrations/{integration_id}/teams`: a new team's key."""

    label: str
    """Unique in the integration; the team id is `<organization_integration_id>-<label>`."""
    integration_key: str
    """The Opsgenie key. Stored encrypted, never returned; refused, never repeated, when
    malformed."""


@dataclass(frozen=True)
class KeyInput:
    """The body of `PUT /v1/teams/{team_id}/key`."""

    integration_key: str
    """The new key. Stored encrypted, never returned; refused, never repeated, when
    malformed."""


def _object(body: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    if set(body) - allowed:
        raise invalid(f"unknown fields; the fields are {', '.join(sorted(allowed))}")
    if missing := required - set(body):
        raise invalid(f"missing fields: {', '.join(sorted(missing))}")
    return body


def _choice(body: Mapping[str, Any], name: str, choices: Sequence[str]) -> str | None:
    value = body.get(name)
    if value is not None and value not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}, or null")
    return value


def _integration_key(body: Mapping[str, Any]) -> str:
    key = body.get(_KEY)
    if not isinstance(key, str) or len(key) > KEY_MAX or not _KEY_FORMAT.fullmatch(key):
        # Never the value: it is a secret, malformed or not.
        raise invalid(
            f"integration_key must be 1 to {KEY_MAX} visible ASCII characters, without spaces"
        )
    return key


def parse_integration(body: Any) -> IntegrationInput:
    """The body's fields, each as the document's `IntegrationInput` says."""
    fields = _object(body, {_ACCOUNT, "platform", "base_url", "probe"}, {_ACCOUNT})
    account = fields[_ACCOUNT]
    if not isinstance(account, str) or not 1 <= len(account) <= ACCOUNT_MAX:
        raise invalid(f"account must be a string of 1 to {ACCOUNT_MAX} characters")
    base_url = fields.get("base_url")
    if base_url is not None and (
        not isinstance(base_url, str)
        or len(base_url) > BASE_URL_MAX
        or not _BASE_URL.fullmatch(base_url)
    ):
        raise invalid(
            f"base_url must be an http(s) URL of at most {BASE_URL_MAX} printable ASCII "
            "characters, or null"
        )
    return IntegrationInput(
        account=account,
        platform=_choice(fields, "platform", list(PLATFORMS)),
        base_url=base_url,
        probe=_choice(fields, "probe", PROBES),
    )


def parse_integration_change(body: Any) -> IntegrationStatus:
    fields = _object(body, {"status"}, {"status"})
    status = fields["status"]
    if status not in IntegrationStatus._value2member_map_:
        raise invalid(f"status must be one of {', '.join(s.value for s in IntegrationStatus)}")
    return IntegrationStatus(status)


def parse_team(body: Any) -> TeamInput:
    """The body's label and key, each as the document's `TeamInput` says."""
    fields = _object(body, {"label", _KEY}, {"label", _KEY})
    label = fields["label"]
    if not isinstance(label, str) or len(label) > LABEL_MAX or not _LABEL.fullmatch(label):
        raise invalid(
            f"label must be 1 to {LABEL_MAX} characters, without control characters and "
            "without spaces at either end"
        )
    return TeamInput(label=label, integration_key=_integration_key(fields))


def parse_key(body: Any) -> str:
    """The new key of `PUT /v1/teams/{team_id}/key`."""
    return _integration_key(_object(body, {_KEY}, {_KEY}))


def parse_integration_page_query(
    query: MultiMapping[str],
) -> tuple[IntegrationStatus | None, int, int | None]:
    """`?status=&limit=&cursor=` of a page of integrations: the cursor is the last
    integration id of the previous page."""
    _only(query, {"status", "limit", "cursor"})
    status = query.get("status")
    if status is not None and status not in IntegrationStatus._value2member_map_:
        raise invalid(f"status must be one of {', '.join(s.value for s in IntegrationStatus)}")
    limit = parse_integer(query.get("limit", str(cursors.DEFAULT_PAGE)), cursors.MAX_PAGE)
    if limit is None:
        raise invalid(f"limit must be an integer from 1 to {cursors.MAX_PAGE}")
    cursor = query.get("cursor")
    after = parse_integer(cursor, INTEGER_MAX) if cursor is not None else None
    if cursor is not None and after is None:
        raise invalid("the cursor must be a next_cursor this API gave out")
    return IntegrationStatus(status) if status is not None else None, limit, after


def parse_integration_id(raw: str) -> int:
    integration_id = parse_integer(raw, INTEGER_MAX)
    if integration_id is None:
        raise invalid(f"the integration id must be an integer from 1 to {INTEGER_MAX}")
    return integration_id


def parse_no_query(query: MultiMapping[str]) -> None:
    if query:
        raise invalid("this route takes no query parameters")
