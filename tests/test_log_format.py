"""The text log format: one event per line, whatever the values hold."""

from __future__ import annotations

import io
import logging

from worker.logs import TextFormatter


def test_a_text_log_line_cannot_be_forged_by_a_value() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("ogv.test_forgery")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "validation.finished\nINFO ogv.pipeline forged",
            extra={"error_code": "opsgenie_1\nINFO ogv.pipeline validation.finished x=\x01"},
        )
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("api.unhandled")
    finally:
        logger.removeHandler(handler)

    lines = stream.getvalue().splitlines()
    assert lines[0] == (
        "WARNING ogv.test_forgery validation.finished\\nINFO ogv.pipeline forged "
        "error_code=opsgenie_1\\nINFO ogv.pipeline validation.finished x=\\x01"
    )
    assert lines[1] == "ERROR ogv.test_forgery api.unhandled"
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines
