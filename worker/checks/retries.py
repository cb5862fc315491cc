"""The retry policy, declared in one place.

Retried: `TransientError` (429, 5xx but 501, timeouts, connection failures) and a
lost database connection. Never retried: a `Verdict` (any final answer about the
key), a base URL off the allowlist, a key no encryption key can decrypt.

A 429 waits what its headers asked (`worker.platforms.throttle_headers`), or, when they
named no usable wait, the backoff (at least `throttle_default`); everything else
backs off exponentially with full jitter: a delay drawn uniformly
from [0, min(cap, base * 2**(attempt - 1))], so workers that failed together do not
come back together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, OperationalError

from worker.checks.guard import SharedStateUnavailable
from worker.checks.opsgenie import Throttled, TransientError
from worker.settings import Settings

RETRIED_DATABASE_ERRORS: tuple[type[Exception], ...] = (OperationalError,)
"""Database failures that a later attempt may not meet (connection lost, locked)."""

THROTTLE_JITTER = 0.25
"""Up to this fraction of a throttle period is added, so paused checks spread out."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    throttle_default: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.max_attempts,
            settings.backoff_base,
            settings.backoff_cap,
            settings.throttle_default,
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter exponential backoff before attempt `attempt + 1`."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(attempt - 1, 0))
        return (rng or random).uniform(0, ceiling)

    def delay_for(self, error: TransientError, attempt: int) -> float:
        """How long to wait before trying again after `error` on attempt `attempt`."""
        if isinstance(error, Throttled):
            period = error.retry_after
            if period is None:
                period = max(self.throttle_default, self.backoff(attempt))
            return period * (1 + random.uniform(0, THROTTLE_JITTER))
        return self.backoff(attempt)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


def is_retried_database_error(exc: BaseException) -> bool:
    """True for a lost or busy database connection, or an unreachable shared Redis
    (the guard's window is counted in the same write): worth another attempt."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (*RETRIED_DATABASE_ERRORS, SharedStateUnavailable))
