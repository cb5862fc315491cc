"""Logging: one event per line, a dotted event name plus ids, JSON when configured."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """`time level logger event key=value ...`: readable, still one event per line."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(
            f"{name}={value}"
            for name, value in record.__dict__.items()
            if name not in STANDARD_ATTRS and value is not None
        )
        return f"{base} {extras}" if extras else base


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
