"""Logging: one event per line, a dotted event name plus ids, JSON when configured."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """`time level logger event key=value ...`: readable, still one event per line.

    Control characters in the event or a value are escaped (`\\n`), so a value that
    came from outside (an upstream's error code, say) cannot forge a line. A
    traceback, when there is one, follows on lines of its own.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = " ".join(
            f"{name}={value}"
            for name, value in record.__dict__.items()
            if name not in STANDARD_ATTRS and value is not None
        )
        return escape_controls(f"{line} {extras}" if extras else line)


class JsonLineFormatter(logging.Formatter):
    """One JSON object a line: `asctime`, `level`, `logger`, `event`, the traceback
    (`exc_info`) if there is one, then the record's extra fields.

    Every check logs a line or two, so this is on the hot path: one dict and one
    `json.dumps`. JSON escapes control characters, so no value can forge a line.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in STANDARD_ATTRS:
                line[name] = value
        return json.dumps(line, default=_jsonable)


def _jsonable(value: object) -> str:
    """A value JSON has no type for: dates and times as ISO 8601, anything else as text."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def escape_controls(text: str) -> str:
    """`text` with every non-printable character written as its escape (`\\n`, `\\x01`)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
