"""The console's Starlette application: `create_app(config)` (config: fulfilment/console/config.py).

Requests pass, outermost first: the session cookie (signed, HttpOnly, SameSite=Lax, expiring
with the session), security headers (CSP without inline script, no framing, no caching), the
CSRF check of every POST (fulfilment/console/csrf.py), and the login check (AuthMiddleware):
every page but the login page, /healthz and /static needs a valid session, and every POST but
login and logout needs the operator role.  Handlers (fulfilment/console/views.py) then call the
same service functions as the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from fulfilment.console import views
from fulfilment.console.auth import Authenticator
from fulfilment.console.config import ConsoleConfig
from fulfilment.console.csrf import CSRFMiddleware, InputGuardMiddleware, SecurityHeadersMiddleware, refusal
from fulfilment.logging_setup import redact
from fulfilment.settings import SettingsError

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "fulfil_console"
PUBLIC_PATHS = frozenset({"/login", "/healthz"})
# POSTs any logged-in user may make; every other POST is an action, for operators only.
ANYONE_MAY_POST = frozenset({"/login", "/logout"})

log = logging.getLogger("fulfilment.console")


class AuthMiddleware:
    """Sets scope["user"] from the session; sends anyone without a valid session to the login page."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        user = self.authenticator.user_of(scope["session"])
        scope["user"] = user
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if user is None:
            if method in ("GET", "HEAD"):
                wanted = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
                response: Any = RedirectResponse(f"/login?next={quote(wanted, safe='')}", status_code=303)
            else:
                response = refusal(403, "You are not logged in (or your session expired): log in and try again.")
            await response(scope, receive, send)
            return
        if method not in ("GET", "HEAD") and path not in ANYONE_MAY_POST and not user.can_act:
            log.warning("console: refused %s %s to %s (role %s)", method, path, user.name, user.role)
            await refusal(403, f"{user.name} is a viewer: viewers cannot act on purchases or dead letters.")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


async def server_error(request: Request, error: Exception) -> Any:
    """A bug, not an input: logged with its traceback, answered with a page in the console's style (no detail)."""
    log.error("console: %s %s failed", request.method, request.url.path, exc_info=error)
    return refusal(500, "The console failed on this request; the error is in its log.")


# ---- templates -------------------------------------------------------------------------------------


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pretty(value: Any) -> str:
    return redact(json.dumps(value, indent=2, sort_keys=True, default=str))


def templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(when=_when, duration=_duration, money=_money, pretty=_pretty, redact=redact)
    return Jinja2Templates(env=environment)


# ---- the app ---------------------------------------------------------------------------------------


def create_app(config: ConsoleConfig) -> Starlette:
    if not config.users:
        raise SettingsError("invalid configuration:\n  CONSOLE_USERS: no console users configured")
    settings = config.settings
    authenticator = Authenticator(config.users, max_age_seconds=settings.console_session_max_age_seconds,
                                  login_concurrency=settings.console_login_concurrency,
                                  login_queue=settings.console_login_queue,
                                  failures_per_address=settings.console_login_failures_per_address)
    routes = [
        Route("/login", views.login_page, methods=["GET"]),
        Route("/login", views.login, methods=["POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/healthz", views.healthz, methods=["GET"]),
        Route("/", views.dashboard, methods=["GET"]),
        Route("/search", views.search, methods=["GET"]),
        Route("/rates", views.rates, methods=["GET"]),
        Route("/purchases", views.purchase_list, methods=["GET"]),
        Route("/purchases/bulk/retry", views.bulk_retry_confirm, methods=["GET"]),
        Route("/purchases/bulk/retry", views.bulk_retry, methods=["POST"]),
        Route("/purchases/{ident}", views.purchase_page, methods=["GET"]),
        Route("/purchases/{ident}/retry", views.retry, methods=["POST"]),
        Route("/purchases/{ident}/cancel", views.cancel, methods=["POST"]),
        Route("/purchases/{ident}/resolve", views.resolve, methods=["POST"]),
        Route("/dead-letters", views.dead_letter_list, methods=["GET"]),
        Route("/dead-letters/bulk/replay", views.bulk_replay_confirm, methods=["GET"]),
        Route("/dead-letters/bulk/replay", views.bulk_replay, methods=["POST"]),
        Route("/dead-letters/{message_id}", views.dead_letter_page, methods=["GET"]),
        Route("/dead-letters/{message_id}/replay", views.replay, methods=["POST"]),
        Route("/dead-letters/{message_id}/purge", views.purge, methods=["POST"]),
        Route("/rejected", views.rejected_list, methods=["GET"]),
        Route("/rejected/{rejection_id:int}", views.rejected_page, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(SessionMiddleware, secret_key=settings.console_session_secret.get_secret_value(),
                   session_cookie=SESSION_COOKIE, max_age=settings.console_session_max_age_seconds,
                   same_site="lax", https_only=settings.console_secure_cookies),
        Middleware(SecurityHeadersMiddleware),
        Middleware(InputGuardMiddleware),
        Middleware(CSRFMiddleware),
        Middleware(AuthMiddleware, authenticator=authenticator),
    ]
    handlers: dict[Any, Any] = {views.Unavailable: views.unavailable, views.BadInput: views.bad_input,
                                HTTPException: views.http_error, Exception: server_error}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.config = config
    app.state.authenticator = authenticator
    app.state.templates = templates()
    return app
