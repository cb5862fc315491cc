"""Django views that ask opsgenie-validator to check a team's key (docs/WEB_APPS.md).

urls.py:
    path("orgs/<int:org>/opsgenie/<int:integration>/teams/<path:team>/check", check_team),
    path("validations/<uuid:request_id>", validation),
"""

from __future__ import annotations

import functools
import uuid

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from worker.client import RequestView, ValidationClient

CHECK_TIMEOUT = 5.0


@functools.cache
def client() -> ValidationClient:
    # Created on first use, so each process of a pre-forking server gets its own.
    return ValidationClient(settings.OGV_BROKER_URL, settings.OGV_DATABASE_URL)


def shown(view: RequestView) -> dict[str, object]:
    return {
        "request_id": view.id,
        "state": view.state,
        "outcome": view.outcome,
        "message": view.message,
    }


@require_POST
def check_team(request: HttpRequest, org: int, integration: int, team: str) -> JsonResponse:
    view = client().request_and_wait(org, integration, team, timeout=CHECK_TIMEOUT)
    return JsonResponse(shown(view), status=200 if view.is_final else 202)


@require_GET
def validation(request: HttpRequest, request_id: uuid.UUID) -> JsonResponse:
    view = client().get(request_id)
    if view is None:
        raise Http404("no such validation request")
    return JsonResponse(shown(view))
