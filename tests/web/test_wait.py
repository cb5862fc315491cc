"""`?wait=` answers a confirming request at once when its second check comes later."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from models import utcnow
from worker.enqueue import RequestView
from worker.web.handlers import wait_until_final


class Rereads:
    """A stand-in for the client's `get`: hands out the views it is given, in order."""

    def __init__(self, *views: RequestView) -> None:
        self.views = list(views)
        self.reads = 0

    def get(self, request_id: Any) -> RequestView:
        self.reads += 1
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]


def view(state: str, due_in: float | None) -> RequestView:
    return RequestView(
        id=str(uuid.uuid4()), organization_id=1, integration_id=1, team_id="1-a",
        requested_by="api", state=state, outcome=None, message=None, http_status=401,
        error_code=None, works_on=[], rate_limit_state=None, rate_limit_reason=None,
        attempts=1, created_at=utcnow(), finished_at=None,
        second_check_at=None if due_in is None else utcnow() + timedelta(seconds=due_in),
    )  # fmt: skip


def test_a_second_check_after_the_wait_is_answered_at_once() -> None:
    confirming = view("confirming", due_in=3600)
    client = Rereads(confirming)

    # Ten minutes' wait, the check due in an hour: the 30-second cap catches a wait-out.
    answered = asyncio.run(
        asyncio.wait_for(wait_until_final(client, confirming, 600), 30)  # type: ignore[arg-type]
    )

    assert (answered, client.reads) == (confirming, 0)


def test_a_second_check_within_the_wait_is_waited_for() -> None:
    soon = view("confirming", due_in=0.2)
    done = view("done", due_in=None)
    client = Rereads(soon, done)

    answered = asyncio.run(wait_until_final(client, soon, 10))  # type: ignore[arg-type]

    assert answered.state == "done" and client.reads >= 1
