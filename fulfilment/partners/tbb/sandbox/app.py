"""Starlette application factory: routes, error rendering and middleware.

Partner API under ``/v1/...`` (the client's base URL is e.g. ``http://127.0.0.1:18080``), admin API
under ``/admin/...``, liveness at ``GET /healthz``.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fulfilment.partners.sandbox_kit.admin import loopback_only
from fulfilment.partners.sandbox_kit.clock import Clock
from fulfilment.partners.sandbox_kit.faults import ConnectionDropped
from fulfilment.partners.sandbox_kit.middleware import AccessLogMiddleware

from . import admin, api, envelope
from .config import SandboxConfig
from .errors import ERROR_CODES, ApiError
from .state import SandboxState

logger = logging.getLogger("fulfilment.partners.tbb.sandbox")


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return envelope.from_api_error(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "VALIDATION_ERROR")
    return envelope.error(request, exc.status_code, code, ERROR_CODES[code][1], headers=dict(exc.headers) if exc.headers else None)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # ConnectionDropped is deliberate and raised after the head was sent: nothing to render.
    if not isinstance(exc, ConnectionDropped):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return envelope.error(request, 500, "INTERNAL_ERROR", ERROR_CODES["INTERNAL_ERROR"][1])


def _routes() -> list[Route]:
    partner = [
        ("/v1/auth/token", "POST", "auth_token", api.auth_token),
        ("/v1/events", "GET", "list_events", api.list_events),
        ("/v1/events/{event_id}", "GET", "get_event", api.get_event),
        ("/v1/events/{event_id}/sections", "GET", "list_sections", api.list_sections),
        ("/v1/events/{event_id}/sections/{section_name}/rows", "GET", "list_rows", api.list_rows),
        ("/v1/quotes", "POST", "create_quote", api.create_quote),
        ("/v1/orders", "POST", "create_order", api.create_order),
        ("/v1/orders", "GET", "list_orders", api.list_orders),
        ("/v1/orders/{order_id}", "GET", "get_order", api.get_order),
    ]
    admin_routes = [
        ("/admin/faults", ["GET"], admin.get_faults),
        ("/admin/faults", ["PUT"], admin.put_faults),
        ("/admin/faults", ["DELETE"], admin.delete_faults),
        ("/admin/config", ["GET"], admin.get_config),
        ("/admin/config", ["PATCH"], admin.patch_config),
        ("/admin/orders", ["GET"], admin.list_orders),
        ("/admin/orders/{order_id}/status", ["POST"], admin.force_order_status),
        ("/admin/quotes", ["GET"], admin.list_quotes),
        ("/admin/stats", ["GET"], admin.stats),
        ("/admin/reset", ["POST"], admin.reset),
        ("/admin/catalogue", ["GET"], admin.catalogue),
    ]
    routes = [Route("/healthz", healthz, methods=["GET"])]
    routes += [Route(path, api.guarded(name, handler), methods=[method], name=name)
               for path, method, name, handler in partner]
    routes += [Route(path, loopback_only(handler), methods=methods) for path, methods, handler in admin_routes]
    return routes


def create_app(config: SandboxConfig | None = None, *, clock: Clock | None = None) -> Starlette:
    """Build a fresh sandbox; all state lives in ``app.state.sandbox`` (a ``SandboxState``)."""
    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(AccessLogMiddleware, logger="fulfilment.partners.tbb.sandbox", request_ids=True)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.sandbox = SandboxState(config or SandboxConfig(), clock)
    return app

