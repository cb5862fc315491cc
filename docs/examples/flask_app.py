"""A Flask app that asks opsgenie-validator to check a team's key (docs/WEB_APPS.md)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue

from worker.client import IdempotencyConflict, RequestView, ValidationClient


def create_app(client: ValidationClient, check_timeout: float = 5.0) -> Flask:
    """The app's two views; `client` is shared by every request of the process."""
    app = Flask(__name__)

    @app.post("/orgs/<int:org>/opsgenie/<int:integration>/teams/<path:team>/check")
    def check_team(org: int, integration: int, team: str) -> ResponseReturnValue:
        # A form that saved a key or an alert action: check it, show the answer if
        # it comes within `check_timeout`, else let the page poll the second view.
        try:
            view = client.request_and_wait(
                org,
                integration,
                team,
                timeout=check_timeout,
                idempotency_key=request.headers.get("Idempotency-Key"),
            )
        except IdempotencyConflict:
            abort(409)
        return jsonify(shown(view)), 200 if view.is_final else 202

    @app.get("/validations/<uuid:request_id>")
    def validation(request_id: uuid.UUID) -> ResponseReturnValue:
        view = client.get(request_id)
        if view is None:
            abort(404)
        return jsonify(shown(view))

    return app


def shown(view: RequestView) -> dict[str, Any]:
    """What the page needs: the outcome and its message (it names the account, never the key)."""
    return {
        "request_id": view.id,
        "state": view.state,
        "outcome": view.outcome,
        "message": view.message,
    }


# In production, one client per process, from OGV_BROKER_URL and OGV_DATABASE_URL:
#     app = create_app(ValidationClient.from_settings())
