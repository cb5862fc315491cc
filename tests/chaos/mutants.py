"""Deliberately broken workers, for showing that the chaos checks catch broken promises.

`celery -A tests.chaos.mutants worker` is the real worker app with one promise
broken, chosen by OGV_CHAOS_MUTATION:

- `early_acks`: messages are acknowledged when received, not after the task ran
  (`task_acks_late = False`), so a task whose process dies is gone;
- `503_is_invalid_key`: a 503 from Opsgenie is taken as "the key is invalid", as the
  reference flow did with every error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from models.base import Outcome
from worker.celery import app
from worker.checks import opsgenie
from worker.platforms import Platform, ProbeName

MUTATION = os.environ.get("OGV_CHAOS_MUTATION", "")

if MUTATION == "early_acks":
    app.conf.task_acks_late = False
elif MUTATION == "503_is_invalid_key":
    _classify = opsgenie.classify

    def _misclassify(
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        platform: Platform,
        probe: ProbeName,
        key: str = "",
    ) -> opsgenie.Verdict:
        if status == 503:
            return opsgenie.Verdict(Outcome.INVALID_KEY, status)
        return _classify(status, headers, body, platform, probe, key)

    opsgenie.classify = _misclassify
elif MUTATION:
    raise ValueError(f"unknown OGV_CHAOS_MUTATION {MUTATION!r}")

__all__ = ["app"]
