"""Logging: one event per line, a dotted event name plus ids, JSON when configured."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

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


def escape_controls(text: str) -> str:
    """`text` with every non-printable character written as its escape (`\\n`, `\\x01`)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"message": "event", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
