"""A safe access log line per request: method, PATH, status, (request id,) duration.

Never the query string (Ticketmaster's carries the apikey), headers (client secrets, bearer tokens,
``x-api-key``) or bodies (payment data), so no secret can end up in a log.

Pure ASGI (not ``BaseHTTPMiddleware``) so an exception raised after the response head was sent (a
dropped connection after a commit) reaches the server untouched and aborts the connection.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MAX_REQUEST_ID_LENGTH = 200


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii").strip()
            except UnicodeDecodeError:
                return None
            # Echo what the client sent when it is a sane header value; otherwise mint our own.
            if text and len(text) <= _MAX_REQUEST_ID_LENGTH and text.isprintable():
                return text
            return None
    return None


class AccessLogMiddleware:
    """Logs one line per request to ``logger``.  With ``request_ids`` every request also gets an
    X-Request-ID (the client's, when sane, else a fresh UUID): in ``scope["state"]["request_id"]``,
    in the answer's ``X-Request-ID`` header and in the log line."""

    def __init__(self, app: ASGIApp, logger: str, request_ids: bool = False) -> None:
        self.app = app
        self.logger = logging.getLogger(logger)
        self.request_ids = request_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        if self.request_ids:
            request_id = _incoming_request_id(scope) or str(uuid.uuid4())
            scope.setdefault("state", {})["request_id"] = request_id
        status: dict[str, int] = {}
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["status"] = message["status"]
                if request_id is not None:
                    MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        outcome = ""
        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            outcome = " (connection aborted)"
            raise
        finally:
            self.logger.info("%s %s -> %s%s%s %.1fms", scope.get("method"), scope.get("path"),
                             status.get("status", "-"), outcome,
                             "" if request_id is None else f" request_id={request_id}",
                             (time.perf_counter() - started) * 1000)
