"""The workaround for aiohttp's private server classes: our answer to unreadable HTTP.

A request aiohttp's HTTP parser cannot read never reaches the application: aiohttp
answers it itself, quoting the offending line (an API token, say) in the answer and
in its ERROR log. `ApiRequestHandler` answers it `malformed_request` instead, and
logs the exception's class only; `ApiRunner` serves the application with it. aiohttp
has no public hook for this, so it is confined here.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from worker.web.answers import error_response
from worker.web.errors import ApiError, malformed

log = logging.getLogger("ogv.api")


class ApiRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses our way.

    aiohttp answers a request its parser cannot read (a control byte in a header, a
    line over 8190 bytes, a broken chunk, an unknown method or Content-Encoding) in
    `handle_error`, before any middleware: with the parser's message as a text/plain
    body and the exception on the `aiohttp.server` ERROR log. Both quote the line
    that failed, an `Authorization` header included. Here the answer is
    `malformed_request` and the log names the exception's class only.
    """

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON error for `status` (400 from the parser), closing the connection.

        `message` is the parser's, quoting the request: it is dropped.
        """
        if request.writer.output_size > 0:  # as aiohttp does: the answer is half sent
            raise ConnectionError("the answer is partly sent; no error can follow it")
        if status < 500:
            error = malformed()
            # The access-log line of a request no middleware saw.
            log.info("api.request", extra={"status": error.status, "error": _name(exc)})
        else:
            error = ApiError(500, "internal_error", "an unexpected error; it is logged")
            log.error("api.unhandled", extra={"error": _name(exc)})
        response = error_response(error)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own failures, by the exception's class: their text may quote the request.

        A broken body a handler already refused is read once more by aiohttp before
        the connection closes; that second failure is the client's, logged at DEBUG.
        """
        exc = kw.get("exc_info")
        if not isinstance(exc, BaseException):
            exc = sys.exc_info()[1]
        clients_fault = isinstance(
            exc, web.RequestPayloadError | HttpProcessingError | ConnectionError
        )
        log.log(
            logging.DEBUG if clients_fault else logging.ERROR,
            "api.server_error",
            extra={"error": _name(exc)},
        )


def _name(exc: BaseException | None) -> str | None:
    return type(exc).__name__ if exc is not None else None


class _Server(web.Server):
    """aiohttp's low-level server, with `ApiRequestHandler` on every connection."""

    def __call__(self) -> RequestHandler:
        # What web.Server.__call__ does, with our class: aiohttp has no public hook
        # for it (aio-libs/aiohttp#3287, #9882). aiohttp is pinned exactly, and
        # tests/test_api_hostile.py fails if this stops taking effect.
        return ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """`web.AppRunner` whose server answers unreadable requests with `ApiRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds a plain web.Server from private parts of the application;
        # retyping it keeps every one of them.
        server.__class__ = _Server
        return server
