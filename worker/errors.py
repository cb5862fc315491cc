"""The service's refusals, below every module that raises or maps them.

    ValueError
    ├── RecordError          a write to the inventory is refused (`code` is stable)
    │   ├── NotFound         a referenced organization integration or team does not exist
    │   └── Busy             a concurrent write got in the way: try again
    └── BaseUrlError         a base URL is malformed or not on the allowlist

Opsgenie's own failures have their tree in worker/checks/opsgenie.py.
"""

from __future__ import annotations


class RecordError(ValueError):
    """Raised when a write is refused; `code` is stable for scripts and the API."""

    code = "invalid"


class NotFound(RecordError):
    """Raised when a referenced organization integration or team does not exist."""

    code = "not_found"


class Busy(RecordError):
    """Raised when a concurrent write got in the way of this one; trying again works."""

    code = "busy"


class BaseUrlError(ValueError):
    """Raised when a base URL is malformed or not on the allowlist."""
