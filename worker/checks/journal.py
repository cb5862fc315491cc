"""What the pipeline tells about each attempt: its log events and its metrics.

`worker.checks.pipeline` decides what happens to each request; this module is
where it says so. Each function writes the log event (under `ogv.pipeline`) and
counts the metric of one thing that happened to a request:

    finished            validation.finished          ogv_validations_total
    confirming          validation.confirming        ogv_confirmations_total{started}
    retry_scheduled     validation.retry_scheduled   ogv_retries_total
    second_opinions     validation.confirmed/...     ogv_confirmations_total
                        team.change_held
    probe_failed        validation.probe_failed
    write_refused       validation.write_refused
    write_failed        validation.write_failed
    trip_unclaimed      guard.trip_unclaimed

`count_finished` and `count_retry` count without a line, for outcomes that
`write_failed` already told. Lines carry ids, names and codes: never a key, nor the
text of an answer or of a refused write.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Sequence

from worker import metrics
from worker.checks import records
from worker.checks.opsgenie import TransientError
from worker.checks.rules import Result, Target

log = logging.getLogger("ogv.pipeline")


def count_finished(result: Result, target: Target | None) -> None:
    """Count a request that reached its final outcome (target None: no call was made)."""
    metrics.validation_finished(
        result.outcome.value,
        result.error_code,
        target.platform.name if target else None,
        target.account if target else None,
    )


def count_retry(target: Target, error: TransientError) -> None:
    """Count a retry scheduled after `error`."""
    metrics.retry_scheduled(error.code, target.account)


def retry_scheduled(
    request_id: uuid.UUID, target: Target, error: TransientError, attempts: int, delay: float
) -> None:
    """A transient failure of this request's attempt, retried after `delay` seconds."""
    count_retry(target, error)
    log.info(
        "validation.retry_scheduled",
        extra={
            "request_id": str(request_id),
            "team_id": target.team_id,
            "account": target.account,
            "platform": target.platform.name,
            "probe": target.probe,
            "reason": error.code,
            "http_status": error.http_status,
            "attempt": attempts,
            "delay_s": round(delay, 3),
        },
    )


def probe_failed(request_id: uuid.UUID, found: Target | Result, exc: Exception) -> None:
    """Our own code failed on this request's answer (`ProbeFailed`)."""
    # The class and the line that raised it, never the text: it may quote the answer.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}" if frames else None
    target = found if isinstance(found, Target) else None
    log.warning(
        "validation.probe_failed",
        extra={
            "request_id": str(request_id),
            "team_id": target.team_id if target else None,
            "account": target.account if target else None,
            "error": type(exc).__name__,
            "raised_at": where,
        },
    )


def write_refused(writes: int, error: str) -> None:
    """The database refused a write of `writes` outcomes (`error`: the driver's error
    name); more than one is written again one by one."""
    log.warning(
        "validation.write_refused",
        extra={"writes": writes, "error": error, "one_by_one": writes > 1},
    )


def trip_unclaimed(base_url: str, error: str) -> None:
    """A trip could not be marked announced (its window was out of reach): the next
    write against `base_url` will claim and announce it."""
    log.warning("guard.trip_unclaimed", extra={"base_url": base_url, "error": error})


def write_failed(
    request_id: uuid.UUID, target: Target | None, attempts: int, error: str, final: bool | None
) -> None:
    """`final`: the request ended `write_failed` (True), will be retried (False), or even
    its attempt could not be counted (None)."""
    log.log(
        logging.WARNING if final is False else logging.ERROR,
        "validation.write_failed",
        extra={
            "request_id": str(request_id),
            "team_id": target.team_id if target else None,
            "account": target.account if target else None,
            "attempt": attempts,
            "error": error,
            "final": final,
        },
    )


def finished(completion: records.Completion, seconds: float) -> None:
    """A request that reached its final outcome in this attempt, written."""
    target, result = completion.target, completion.result
    count_finished(result, target)
    log.info(
        "validation.finished",
        extra={
            "request_id": str(completion.request_id),
            "team_id": target.team_id if target else None,
            "account": target.account if target else None,
            "platform": target.platform.name if target else None,
            "probe": target.probe if target else None,
            "outcome": result.outcome.value,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "attempt": completion.attempts,
            "latency_ms": round(seconds * 1000, 1),
        },
    )


def confirming(completion: records.Completion, delay: float) -> None:
    """A valid team's failing verdict, waiting `delay` seconds for its second check."""
    target, result = completion.target, completion.result
    assert target is not None
    metrics.confirmation("started")
    log.info(
        "validation.confirming",
        extra={
            "request_id": str(completion.request_id),
            "team_id": target.team_id,
            "account": target.account,
            "base_url": target.base_url,
            "outcome": result.outcome.value,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "confirm_in_s": delay,
        },
    )


def second_opinions(completions: Sequence[records.Completion], written: records.Written) -> None:
    """A line per second check that answered (and a count), and per change held."""
    held = set(written.held)
    for completion in completions:
        target = completion.target
        verdict = written.confirmations.get(completion.request_id)
        if verdict is not None and target is not None:
            metrics.confirmation(verdict)
            log.log(
                logging.WARNING if verdict == "disagreed" else logging.INFO,
                f"validation.{verdict}",
                extra={
                    "request_id": str(completion.request_id),
                    "team_id": target.team_id,
                    "account": target.account,
                    "base_url": target.base_url,
                    "first_outcome": completion.confirming.value if completion.confirming else None,
                    "outcome": completion.result.outcome.value,
                },
            )
        if completion.request_id in held and target is not None:
            log.warning(
                "team.change_held",
                extra={
                    "request_id": str(completion.request_id),
                    "team_id": target.team_id,
                    "account": target.account,
                    "base_url": target.base_url,
                    "new_status": completion.result.outcome.value,
                },
            )
