"""Per-request context: the X-Request-ID and a safe access log line.

Pure ASGI (not ``BaseHTTPMiddleware``) so an exception raised after the response head was sent (the
drop-after-commit fault) still reaches the server untouched and aborts the connection.

The log line holds method, path, status, request id and duration only: never headers, bodies or
query strings, so client secrets and bearer tokens cannot end up in logs.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("fulfilment.partners.tbb.sandbox")

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


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder: dict[str, int] = {}
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
            await send(message)

        outcome = ""
        try:
            await self.app(scope, receive, send_with_request_id)
        except BaseException:
            outcome = " (connection aborted)"
            raise
        finally:
            logger.info(
                "%s %s -> %s%s request_id=%s %.1fms",
                scope.get("method"),
                scope.get("path"),
                status_holder.get("status", "-"),
                outcome,
                request_id,
                (time.perf_counter() - started) * 1000,
            )
