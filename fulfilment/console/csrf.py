"""CSRF protection for every form of the console, and the other request guards.

Every POST must be an urlencoded form carrying the session's CSRF token in the `csrf_token`
field; it is compared in constant time before any handler runs, and anything else is answered
403.  Session cookies are also HttpOnly and SameSite=Lax (fulfilment/console/app.py), so a
cross-site form does not even carry the session; the token is what a forged request cannot know.

Every POST must also come from this site by its `Origin` header, or, when a browser sent none,
by its `Referer` (OWASP's "verifying origin with standard headers"): the origin's host and port
must be the request's own `Host`, its scheme the request's own or https (a TLS proxy in front).
A POST carrying neither header is refused, as OWASP recommends: every browser sends `Origin`
on a POST, and pages are served with `Referrer-Policy: same-origin` so that it is the real
origin, never `null`.  The CLI, not scripts against the console, is the way to automate.

Before any of that, InputGuardMiddleware answers 400 to a path or query string that is too long
or holds a control character (a NUL byte reaches no handler and no database), and the form
parser refuses NUL bytes in any field.

The checked form is handed to the handler in `scope["fulfil.form"]` (first value of each field).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 50
FORM_KEY = "fulfil.form"
MAX_PATH_CHARS = 1024
MAX_QUERY_BYTES = 4096
# C0 controls and DEL: never part of an id, a name or a search (tabs and newlines are allowed in forms only).
_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F))

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
    """An urlencoded body: the first value of each field (ValueError if not UTF-8, too many fields or a NUL)."""
    fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS,
                      errors="strict")
    form = {name: values[0] for name, values in fields.items()}
    if any("\x00" in name or "\x00" in value for name, value in form.items()):
        raise ValueError("a form field holds a NUL byte")
    return form


def _netloc(scheme: str, netloc: str) -> str:
    netloc = netloc.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def origin_problem(scope: Scope) -> str | None:
    """Why this unsafe request does not come from this site (Origin, else Referer), or None if it does."""
    headers = Headers(scope=scope)
    host = headers.get("host", "")
    for header in ("origin", "referer"):
        source = headers.get(header)
        if source is None:
            continue
        try:
            parts = urlsplit(source)
        except ValueError:
            parts = None
        own = {scope.get("scheme", "http"), "https"}
        if (parts is None or parts.scheme not in own or not host
                or _netloc(parts.scheme, parts.netloc) != _netloc(parts.scheme, host)):
            return f"its {header.title()} is another site's ({source[:100]!r}), not {host[:100]!r}"
        return None
    return "it carries neither an Origin nor a Referer header"


class CSRFMiddleware:
    """Refuses (403) any unsafe request that is not a form with the session's CSRF token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = origin_problem(scope)
        if problem is not None:
            log.warning("console: refused %s %s: %s", scope["method"], scope["path"], problem)
            await refusal(403, f"Refused: {problem}. Only the console's own pages may send its forms.")(
                scope, receive, send)
            return
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
        except ValueError as error:
            await refusal(400, f"The form could not be read ({error}).")(scope, receive, send)
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


class InputGuardMiddleware:
    """400 for a path or query string no page could mean: too long, or holding a control character (NUL)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = input_problem(scope)
            if problem is not None:
                log.warning("console: refused %s: %s", scope["method"], problem)
                await refusal(400, f"Bad request: {problem}.")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def input_problem(scope: Scope) -> str | None:
    from urllib.parse import unquote_to_bytes

    path: str = scope["path"]
    query: bytes = scope.get("query_string", b"")
    if len(path) > MAX_PATH_CHARS:
        return f"the address is longer than {MAX_PATH_CHARS} characters"
    if len(query) > MAX_QUERY_BYTES:
        return f"the query is longer than {MAX_QUERY_BYTES} bytes"
    if any(c in _CONTROLS for c in path):
        return "the address holds a control character"
    decoded = unquote_to_bytes(query.replace(b"+", b" "))
    if any(b < 0x20 or b == 0x7F for b in decoded):
        return "the query holds a control character"
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "the query is not UTF-8"
    return None


class SecurityHeadersMiddleware:
    """No framing, no sniffing, no referrer to other sites, no inline script, and no caching of any page."""

    HEADERS = (
        (b"content-security-policy",
         b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
         b"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        # same-origin: a POST's Origin (and Referer) name this site; other sites get nothing.
        (b"referrer-policy", b"same-origin"),
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
