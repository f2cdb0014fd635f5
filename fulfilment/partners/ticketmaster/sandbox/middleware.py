"""A safe access log line per request: method, PATH, status, duration. Never the query string (it
carries the apikey), headers (``x-api-key``) or bodies (payment data).

Pure ASGI (not ``BaseHTTPMiddleware``) so an exception raised after the response head was sent
(commit-then-drop) reaches the server untouched and aborts the connection.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("fulfilment.partners.ticketmaster.sandbox")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {}
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["status"] = message["status"]
            await send(message)

        outcome = ""
        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            outcome = " (connection aborted)"
            raise
        finally:
            logger.info("%s %s -> %s%s %.1fms", scope.get("method"), scope.get("path"), status.get("status", "-"),
                        outcome, (time.perf_counter() - started) * 1000)
