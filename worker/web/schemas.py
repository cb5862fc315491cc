"""The OpenAPI document's component schemas, generated from the dataclasses the API answers.

Each view (`RequestView`, `TeamRow`, `MigrationReport`...) is turned into JSON Schema
by pydantic's `TypeAdapter`, its attribute docstrings becoming descriptions, and put
in the document's terms (`_tidy`): no titles or defaults, `null` as a second type,
every field required and no other allowed. `_REFINED` then says what a Python type
cannot: the values a `str` takes, a count's minimum, a format, a constant, and the
descriptions of fields whose class lives in `worker.checks`. The input formats come
from their owners (`models.integration`, `worker.web.inputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import Enum
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from models import IntegrationStatus, Outcome, Requester, RequestState, TeamStatus
from models.integration import (
    ACCOUNT_MAX,
    BASE_URL_MAX,
    BIGINT_MAX,
    INTEGER_MAX,
    LABEL_MAX,
    LABEL_PATTERN,
    TEAM_ID_MAX,
    TEAM_ID_PATTERN,
)
from worker import audit, inventory, readiness
from worker.checks import held
from worker.enqueue import RequestView
from worker.platforms import PLATFORMS
from worker.platforms.hints import HINTS, Hint
from worker.platforms.opsgenie import OPSGENIE_END_OF_SUPPORT
from worker.web.client import SavedTeam
from worker.web.inputs import (
    BASE_URL_PATTERN,
    DIGITS_PATTERN,
    PROBES,
    IntegrationChange,
    IntegrationInput,
    KeyInput,
    Submission,
    TeamInput,
)
from worker.web.teams import TeamPage, TeamRow

REF = "#/components/schemas/"
INTEGER_LITERAL = 'An integer literal: 7, never 7.0, "7" or true.'

# Each component and the dataclass it is generated from.
VIEWS: dict[str, type] = {
    "ValidationInput": Submission,
    "ValidationRequest": RequestView,
    "Team": TeamRow,
    "TeamPage": TeamPage,
    "IntegrationInput": IntegrationInput,
    "IntegrationChange": IntegrationChange,
    "TeamInput": TeamInput,
    "KeyInput": KeyInput,
    "Integration": inventory.IntegrationView,
    "IntegrationPage": inventory.IntegrationPage,
    "SavedTeam": SavedTeam,
    "RemovedIntegration": inventory.RemovedIntegration,
    "RemovedTeam": inventory.RemovedTeam,
    "MigrationReport": readiness.MigrationReport,
    "OrganizationReadiness": readiness.OrganizationReadiness,
    "IntegrationReadiness": readiness.IntegrationReadiness,
    "Probed": readiness.Probed,
    "Hint": Hint,
    "BaseUrlGuard": held.BaseUrlGuard,
    "HeldChange": held.HeldRow,
    "HeldPage": held.HeldPage,
    "AuditEvent": audit.Entry,
    "AuditPage": audit.Page,
}
_COMPONENT = {view.__name__: name for name, view in VIEWS.items()}
_CONFIG = ConfigDict(
    use_attribute_docstrings=True, json_schema_serialization_defaults_required=True
)
# Fields left out of the answer when None (`MigrationReport.as_dict`), never null.
_ABSENT_WHEN_NONE = {"MigrationReport": {"probed"}}
# Request bodies: a field with a default may be left out.
_INPUTS = {"ValidationInput", "IntegrationInput", "IntegrationChange", "TeamInput", "KeyInput"}


def team_id_schema(more: str) -> dict[str, Any]:
    """A team id as the API takes it, in a body or a path; `more` ends the description."""
    return {
        "type": "string",
        "minLength": 3,
        "maxLength": TEAM_ID_MAX,
        "pattern": TEAM_ID_PATTERN,
        "description": "`<organization_integration_id>-<label>`, as `ogv team add` printed "
        "it: the label has no control character and no space at either end. Anything else "
        "is refused (422) and never repeated: it may be a key pasted into the wrong field. " + more,
    }


def _enum(values: Iterable[str] | type[Enum]) -> dict[str, Any]:
    return {"enum": [v.value if isinstance(v, Enum) else v for v in values]}


_COUNT = {"minimum": 0}
_KEY_INPUT = {
    "minLength": 1,
    "maxLength": inventory.KEY_MAX,
    "pattern": inventory.KEY_PATTERN,
    "writeOnly": True,
}
_PLATFORMS = {"items": {"type": "string", **_enum(PLATFORMS)}}
_STATUS = _enum(TeamStatus)

_REFINED: dict[str, dict[str, dict[str, Any]]] = {
    "ValidationInput": {
        "organization_id": {"minimum": 1, "maximum": BIGINT_MAX, "description": INTEGER_LITERAL},
        "integration_id": {"minimum": 1, "maximum": INTEGER_MAX, "description": INTEGER_LITERAL},
        "team_id": team_id_schema(
            "A well-formed id of no team of that integration is not refused: the request "
            "ends with the outcome `invalid_team`."
        ),
    },
    "ValidationRequest": {
        "id": {"format": "uuid"},
        "requested_by": _enum(Requester),
        "state": _enum(RequestState),
        "outcome": _enum(Outcome),
        "works_on": _PLATFORMS,
        "attempts": _COUNT,
        "confirmation": _enum(["confirmed", "disagreed"]),
    },
    "Team": {
        "platform": _enum(PLATFORMS),
        "probe": _enum(["authenticate", "alerts"]),
        "status": _STATUS,
        "works_on": _PLATFORMS,
        "jsm_ops": _enum(["works", "fails", "unknown"]),
        "days_left": _COUNT,
    },
    "IntegrationInput": {
        "account": {"minLength": 1, "maxLength": ACCOUNT_MAX},
        "platform": _enum(PLATFORMS),
        "base_url": {"minLength": 8, "maxLength": BASE_URL_MAX, "pattern": BASE_URL_PATTERN},
        "probe": _enum(PROBES),
    },
    "IntegrationChange": {"status": _enum(IntegrationStatus)},
    "TeamInput": {
        "label": {
            "minLength": 1,
            "maxLength": LABEL_MAX,
            "pattern": LABEL_PATTERN,
            "description": "Unique in the integration; the team id is "
            "`<organization_integration_id>-<label>`. Printable as well: no character of "
            "Unicode's Other or Separator categories but the space (Python's "
            "`str.isprintable`); anything else is refused (422).",
        },
        "integration_key": _KEY_INPUT,
    },
    "KeyInput": {"integration_key": _KEY_INPUT},
    "Integration": {
        "integration_id": {"minimum": 1, "maximum": INTEGER_MAX},
        "organization_id": {"minimum": 1, "maximum": BIGINT_MAX},
        "platform": _enum(PLATFORMS),
        "probe": _enum(PROBES),
        "status": _enum(IntegrationStatus),
        "teams": _COUNT,
    },
    "IntegrationPage": {"next_cursor": {"pattern": DIGITS_PATTERN}},
    "RemovedIntegration": {"teams": _COUNT},
    "MigrationReport": {
        "end_of_support": {"const": OPSGENIE_END_OF_SUPPORT.isoformat()},
        "days_left": _COUNT,
    },
    "OrganizationReadiness": {
        **{name: _COUNT for name in ("teams", "works", "fails", "unknown", "days_left")}
    },
    "IntegrationReadiness": {
        "platform": _enum(n for n, p in PLATFORMS.items() if p.is_opsgenie),
        **{name: _COUNT for name in ("teams", "works", "fails", "unknown", "days_left")},
        "deadline_reason": _enum(["end_of_support", "migrated", "switched_off"]),
    },
    "Hint": {"code": _enum(HINTS)},
    "Probed": {name: _COUNT for name in ("teams", "works", "fails", "unknown")},
    "BaseUrlGuard": {
        "tripped": {"description": "Changes from valid to failing are held now."},
        "tripped_at": {"description": "Set while tripped."},
        "checks": {
            **_COUNT,
            "description": "Checks of valid teams in the window, less each organization's "
            "changes past its cap.",
        },
        "changes": {
            **_COUNT,
            "description": "Changes from valid to failing in the window, held ones included; "
            "each organization counts for at most ceil(OGV_GUARD_MIN_CHANGES / "
            "OGV_GUARD_MIN_ORGANIZATIONS) of them.",
        },
        "organizations": {
            **_COUNT,
            "description": "Distinct organizations among those changes; the guard needs "
            "OGV_GUARD_MIN_ORGANIZATIONS (default 3) to trip, and never counts accounts.",
        },
        "trips": {**_COUNT, "description": "Times the guard tripped."},
        "held": {**_COUNT, "description": "Changes held now."},
    },
    "HeldChange": {
        "old_status": _STATUS,
        "new_status": _STATUS,
        "rechecked_at": {"description": "When beat last asked to check it again."},
    },
    "HeldPage": {"next_cursor": {"description": "Pass as `cursor`; null on the last page."}},
    "AuditEvent": {
        "action": _enum(audit.ACTIONS),
        "actor": {"description": "`cli:<os user>` or `token:<name>`."},
    },
    "AuditPage": {"next_cursor": {"description": "Pass as `cursor`; null on the last page."}},
}


def _tidy(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema in the document's terms: no titles or defaults, `null` as a type."""
    out = {k: v for k, v in schema.items() if k not in ("title", "default", "$defs")}
    if "description" in out:  # a docstring's line breaks
        out["description"] = " ".join(out["description"].split())
    if "$ref" in out:
        out["$ref"] = REF + _COMPONENT[out["$ref"].removeprefix(REF)]
    if "anyOf" in out:
        kinds = [_tidy(kind) for kind in out.pop("anyOf")]
        (kind,) = [k for k in kinds if k != {"type": "null"}]
        if "type" not in kind:  # a $ref: JSON Schema has no shorter way to say "or null"
            return {**out, "anyOf": kinds}
        out = {**kind, **out, "type": [kind["type"], "null"]}
    if "items" in out:
        out["items"] = _tidy(out["items"])
    if "properties" in out:
        out["properties"] = {k: _tidy(v) for k, v in out["properties"].items()}
        out["additionalProperties"] = False
    return out


def _refine(field: dict[str, Any], refinement: dict[str, Any]) -> dict[str, Any]:
    out = {**field, **refinement}
    if "enum" in refinement and "null" in field.get("type", ()):
        out["enum"] = [*refinement["enum"], None]
    return out


def _generated(name: str, view: type) -> dict[str, Any]:
    # A subclass carries pydantic's config, so the views stay plain dataclasses; its
    # module and qualname lead pydantic to the view's source for the docstrings.
    documented = type(
        view.__name__,
        (view,),
        {
            "__pydantic_config__": _CONFIG,
            "__module__": view.__module__,
            "__qualname__": view.__qualname__,
            "__doc__": view.__doc__,
        },
    )
    schema = _tidy(
        TypeAdapter(documented).json_schema(mode="serialization", ref_template=REF + "{model}")
    )
    fields = schema["properties"]
    for field, refinement in _REFINED.get(name, {}).items():
        fields[field] = _refine(fields[field], refinement)
    if name in _INPUTS:
        schema["required"] = [
            f.name
            for f in dataclasses.fields(view)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
    for field in _ABSENT_WHEN_NONE.get(name, ()):
        (present,) = [k for k in fields[field].pop("anyOf") if k != {"type": "null"}]
        fields[field].update(present)
        schema["required"].remove(field)
    return schema


def view_schemas() -> dict[str, Any]:
    """Every component generated from a view, by its name in the document."""
    return {name: _generated(name, view) for name, view in VIEWS.items()}
