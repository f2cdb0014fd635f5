"""Partner API handlers (``/v1/...``), each wrapped by the fault-injection guard.

Check order per request (ASSUMED where the docs are silent): injected fault -> bearer token (401)
-> payment setup (403, quotes/orders only) -> body/query validation (400) -> business rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from fulfilment.partners.sandbox_kit.faults import DropConnectionResponse
from fulfilment.partners.sandbox_kit.trickle import trickled

from . import envelope
from .accounts import PartnerAccount
from .discovery import EventFilters, search
from .errors import ApiError
from .faults import render_fault, render_lookup
from .state import SandboxState
from .store import OrderRequest, QuoteRequest
from .validation import FieldErrors, json_object, pagination, query_date

DELIVERY_TYPES = ("mobile_transfer", "mobile_qr", "pdf")

Handler = Callable[[Request], Awaitable[Response]]


def sandbox_of(request: Request) -> SandboxState:
    return request.app.state.sandbox


def guarded(endpoint: str, handler: Handler) -> Handler:
    """Apply latency/stall and pre-handler faults; after a committed create_order, maybe hold the
    answer back (respond_after_commit_ms), then maybe drop; else maybe trickle the answer."""

    async def endpoint_with_faults(request: Request) -> Response:
        sandbox = sandbox_of(request)
        sandbox.count_request(endpoint)
        plan = sandbox.faults.plan(endpoint)
        if plan.delay_seconds > 0:
            await asyncio.sleep(plan.delay_seconds)
        if plan.fault is not None:
            return render_fault(request, plan.fault)
        response = await handler(request)
        if response.status_code == 201:
            hold = sandbox.faults.respond_after_commit_seconds(endpoint)
            if hold > 0:
                await asyncio.sleep(hold)  # committed already: other requests see the order meanwhile
            if sandbox.faults.should_drop(endpoint):
                return DropConnectionResponse(response, "the order was committed")
        return trickled(response, sandbox.faults.trickle(endpoint))

    endpoint_with_faults.__name__ = endpoint
    return endpoint_with_faults


def _account(request: Request) -> PartnerAccount:
    return sandbox_of(request).store.authenticate(request.headers.get("authorization"))


# --- auth -----------------------------------------------------------------------------------

async def auth_token(request: Request) -> Response:
    body = await json_object(request)
    errors = FieldErrors()
    client_id = errors.required_str(body, "client_id")
    client_secret = errors.required_str(body, "client_secret")
    grant_type = body.get("grant_type")
    if grant_type is None:
        errors.add("grant_type", "is required")
    errors.raise_if_any()
    if grant_type != "client_credentials":
        raise ApiError("UNSUPPORTED_GRANT_TYPE", {"grant_type": grant_type})
    data = sandbox_of(request).store.issue_token(client_id, client_secret)
    return envelope.success(request, data)


# --- discovery ------------------------------------------------------------------------------

async def list_events(request: Request) -> Response:
    _account(request)
    sandbox = sandbox_of(request)
    query = request.query_params
    errors = FieldErrors()
    date_from = query_date(request, "date_from", errors)
    date_to = query_date(request, "date_to", errors)
    errors.raise_if_any()
    limit, offset = pagination(request)

    def text(name: str) -> str | None:
        value = query.get(name)
        return value if value else None

    filters = EventFilters(
        date_from=date_from or sandbox.clock().date(),
        q=text("q"),
        event_id=text("event_id"),
        venue_id=text("venue_id"),
        venue_name=text("venue_name"),
        performer_id=text("performer_id"),
        performer_name=text("performer_name"),
        date_to=date_to,
    )
    events = search(sandbox.catalogue, filters)
    page = events[offset: offset + limit]
    return envelope.paginated(request, [e.public() for e in page], len(events), limit, offset)


async def get_event(request: Request) -> Response:
    _account(request)
    event = sandbox_of(request).store.event_or_404(request.path_params["event_id"])
    return envelope.success(request, event.public())


async def list_sections(request: Request) -> Response:
    _account(request)
    limit, offset = pagination(request)
    sections = sandbox_of(request).store.sections_with_inventory(request.path_params["event_id"])
    items = [
        {"section_id": s.section_id, "section_name": s.name, "section_name_display": s.display}
        for s in sections
    ]
    return envelope.paginated(request, items[offset: offset + limit], len(items), limit, offset)


async def list_rows(request: Request) -> Response:
    _account(request)
    limit, offset = pagination(request)
    rows = sandbox_of(request).store.rows_with_inventory(
        request.path_params["event_id"], request.path_params["section_name"]
    )
    return envelope.paginated(request, rows[offset: offset + limit], len(rows), limit, offset)


# --- quotes & orders ------------------------------------------------------------------------

async def create_quote(request: Request) -> Response:
    account = _account(request)
    store = sandbox_of(request).store
    store.require_payment(account)
    body = await json_object(request)
    errors = FieldErrors()
    quote_request = QuoteRequest(
        event_id=errors.required_str(body, "event_id"),
        section_name=errors.required_str(body, "section_name"),
        row_name=errors.optional_str(body, "row_name"),
        quantity=errors.positive_int(body, "quantity"),
    )
    errors.raise_if_any()
    return envelope.success(request, store.create_quote(account, quote_request), status_code=201)


async def create_order(request: Request) -> Response:
    account = _account(request)
    store = sandbox_of(request).store
    store.require_payment(account)
    body = await json_object(request)
    errors = FieldErrors()
    quote_id = errors.required_str(body, "quote_id")
    delivery_type = errors.choice(body, "delivery_type", DELIVERY_TYPES)
    deadline = errors.utc_datetime(body, "delivery_deadline")
    errors.raise_if_any()
    order_request = OrderRequest(quote_id=quote_id, delivery_type=delivery_type, delivery_deadline=deadline)
    faults = sandbox_of(request).faults
    expiry_first = faults.expiry_checked_first("create_order")
    try:
        data = store.create_order(account, order_request, expiry_checked_first=expiry_first)
    except ApiError as exc:
        # Count the fault only when the swapped check order changed the answer.
        if expiry_first and exc.code == "QUOTE_EXPIRED" and store.quote_consumed(quote_id):
            faults.record("create_order", "expiry_checked_first")
        raise
    return envelope.success(request, data, status_code=201)


async def get_order(request: Request) -> Response:
    account = _account(request)
    data = sandbox_of(request).store.get_order(account, request.path_params["order_id"])
    return envelope.success(request, data)


async def list_orders(request: Request) -> Response:
    account = _account(request)
    limit, offset = pagination(request)
    quote_id = request.query_params.get("quote_id") or None
    sandbox = sandbox_of(request)
    plan = sandbox.faults.plan_lookup("list_orders")

    def hide(created_at: datetime, now: datetime) -> bool:
        return sandbox.faults.hides_order("list_orders", plan, created_at, now)

    no_hiding = plan.lag_seconds <= 0 and plan.miss_rate <= 0
    items, total = sandbox.store.list_orders(account, quote_id, limit, offset, None if no_hiding else hide)
    return render_lookup(request, plan, items, total, limit, offset)
