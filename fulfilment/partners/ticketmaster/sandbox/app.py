"""Starlette application factory: partner routes, SecureRender, admin, liveness, error rendering.

Partner API under ``/partners/v1/...``, SecureRender under ``/marketplace/v1/securerender`` and
``/marketplace-staging/v1/securerender``, admin API under ``/admin/...``, liveness ``GET /healthz``.
Unknown paths and methods answer the TM error envelope (404 / 405, codes in ``assumed.py``).
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fulfilment.partners.sandbox_kit.clock import Clock
from fulfilment.partners.sandbox_kit.faults import ConnectionDropped
from fulfilment.partners.sandbox_kit.middleware import AccessLogMiddleware

from . import admin, api, assumed
from .config import SandboxConfig
from .errors import envelope
from .pipeline import EndpointSpec, Handler, partner_endpoint
from .state import SandboxState

logger = logging.getLogger("fulfilment.partners.ticketmaster.sandbox")

_EVENT = "/partners/v1/events/{event_id}"

PARTNER_ROUTES: list[tuple[str, str, EndpointSpec, Handler]] = [
    ("/partners/v1/events", "GET", EndpointSpec("list_events"), api.list_events),
    (_EVENT, "GET", EndpointSpec("event_details"), api.event_details),
    (_EVENT + "/availability", "GET", EndpointSpec("availability", polling=True, event_scoped=True), api.availability),
    (_EVENT + "/cart", "POST", EndpointSpec("reserve", polling=True, event_scoped=True), api.reserve),
    (_EVENT + "/cart/payment", "PUT", EndpointSpec("payment", event_scoped=True, cart_id_of=api.payment_cart_id),
     api.payment),
    (_EVENT + "/cart", "PUT", EndpointSpec("commit", polling=True, event_scoped=True, cart_id_of=api.commit_cart_id),
     api.commit),
    (_EVENT + "/cart", "DELETE", EndpointSpec("delete_cart", polling=True, event_scoped=True,
                                              cart_id_of=api.delete_cart_id), api.delete_cart),
    ("/partners/v1/orders", "POST", EndpointSpec("order_management", polling=True), api.order_management),
    ("/partners/v1/orders/unredeemed", "GET", EndpointSpec("unredeemed"), api.unredeemed),
    ("/partners/v1/polling/{poll_id:path}", "GET", EndpointSpec("poll", fault_name_of=api.poll_fault_name), api.poll),
    ("/marketplace/v1/securerender", "POST", EndpointSpec("securerender"), api.securerender),
    ("/marketplace-staging/v1/securerender", "POST", EndpointSpec("securerender"), api.securerender),
]


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    spec = assumed.METHOD_NOT_ALLOWED if exc.status_code == 405 else assumed.NOT_FOUND
    return JSONResponse(envelope(spec), status_code=spec.http_status)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # ConnectionDropped is deliberate and raised after the head was sent: nothing to render.
    if not isinstance(exc, ConnectionDropped):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(envelope(assumed.ErrorSpec(500, 10500, "Internal error occurred")), status_code=500)


def _routes() -> list[Route]:
    routes = [Route("/healthz", healthz, methods=["GET"])]
    routes += [Route(path, partner_endpoint(spec, handler), methods=[method], name=f"{spec.name}:{path}")
               for path, method, spec, handler in PARTNER_ROUTES]
    routes += [Route(path, handler, methods=methods) for path, methods, handler in admin.ROUTES]
    return routes


def create_app(config: SandboxConfig | None = None, *, clock: Clock | None = None) -> Starlette:
    """A fresh sandbox; all its state is ``app.state.sandbox`` (a ``SandboxState``). ``clock`` is the
    source the sandbox clock reads (default: the system clock)."""
    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(AccessLogMiddleware, logger="fulfilment.partners.ticketmaster.sandbox")],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.sandbox = SandboxState(config or SandboxConfig(), clock)
    return app
