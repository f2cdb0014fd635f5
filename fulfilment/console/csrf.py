"""CSRF protection for every form of the console, and the other request guards.

Every POST must be an urlencoded form carrying the session's CSRF token in the `csrf_token`
field; it is compared in constant time before any handler runs, and anything else is answered
403.  Session cookies are also HttpOnly and SameSite=Lax (fulfilment/console/app.py), so a
cross-site form does not even carry the session; the token is what a forged request cannot know.

The checked form is handed to the handler in `scope["fulfil.form"]` (first value of each field).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 50
FORM_KEY = "fulfil.form"

log = logging.getLogger("fulfilment.console")


def refusal(status: int, message: str) -> Response:
    """A bare page: refusals are answered before any template or user is known."""
    from html import escape

    body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{status} refused</title>"
            f"<link rel=stylesheet href=/static/console.css><main class=narrow><h1>Refused ({status})</h1>"
            f"<p>{escape(message)}</p><p><a href=/>Back to the console</a></p></main></html>")
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def token_matches(expected: object, given: object) -> bool:
    if not isinstance(expected, str) or not isinstance(given, str) or not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def parse_form(body: bytes) -> dict[str, str]:
    """An urlencoded body: the first value of each field (ValueError if not UTF-8 or too many fields)."""
    fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    return {name: values[0] for name, values in fields.items()}


class CSRFMiddleware:
    """Refuses (403) any unsafe request that is not a form with the session's CSRF token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            log.warning("console: refused %s %s: not a form (%s)", scope["method"], scope["path"], content_type or "-")
            await refusal(403, "Only the console's own forms are accepted.")(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            await refusal(413, "The form is too large.")(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORM_BYTES:
                await refusal(413, "The form is too large.")(scope, receive, send)
                return
        try:
            form = parse_form(body)
        except ValueError:
            await refusal(400, "The form could not be read.")(scope, receive, send)
            return
        session: MutableMapping[str, Any] = scope.get("session", {})
        if not token_matches(session.get("csrf"), form.get(FIELD)):
            log.warning("console: refused %s %s: CSRF token %s", scope["method"], scope["path"],
                        "missing" if not form.get(FIELD) else "wrong")
            await refusal(403, "The form's security token is missing or does not match your session (it may have "
                               "expired): reload the page and try again.")(scope, receive, send)
            return
        scope[FORM_KEY] = form
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeadersMiddleware:
    """No framing, no sniffing, no referrer, no inline script, and no caching of any page."""

    HEADERS = (
        (b"content-security-policy",
         b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
         b"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.HEADERS if name not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
