"""Admin API (``/admin/...``): inspect and steer the sandbox from tests. No auth, loopback only.

Plain JSON (no partner envelope) so test code can read it without unwrapping. Errors are
``{"error": "<reason>"}`` with 400/403/404.

  GET    /admin/faults                    {"rules", "counters", "totals"}
  PUT    /admin/faults                    body {endpoint: rule}; replaces all rules
  DELETE /admin/faults                    clears rules, keeps counters
  GET    /admin/config                    runtime knobs + seats_per_row, seed, partners (no secrets)
  PATCH  /admin/config                    body: any of quote_ttl_seconds, token_ttl_seconds,
                                          transfer_after_seconds (null = never), transfer_outcome,
                                          payment_error_code
  GET    /admin/orders?quote_id=&partner=&status=   {"orders": [...], "count": n}
  GET    /admin/quotes?quote_id=&partner=           {"quotes": [...], "count": n}
  POST   /admin/orders/{order_id}/status  body {"status": "transfer_complete"|"transfer_expired"|"cancelled"}
  GET    /admin/stats                     counts per partner, orders_on_expired_quote, faults, requests
  POST   /admin/reset                     back to the start-up state (inventory restored)
  GET    /admin/catalogue                 seeded events/sections/rows with live availability
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fulfilment.partners.sandbox_kit.admin import BadBody, read_json
from fulfilment.partners.sandbox_kit.admin import fail as _fail

from .catalogue import PAST_EVENT_ID, SEED_EVENT_ID, TINY_EVENT_ID
from .lifecycle import ALL_STATUSES
from .state import SandboxState


def _sandbox(request: Request) -> SandboxState:
    return request.app.state.sandbox


async def _body(request: Request) -> Any:
    try:
        return await read_json(request)
    except BadBody:
        return _INVALID


_INVALID = object()


async def get_faults(request: Request) -> Response:
    return JSONResponse(_sandbox(request).faults.snapshot())


async def put_faults(request: Request) -> Response:
    body = await _body(request)
    if body is _INVALID:
        return _fail(400, "body must be JSON")
    try:
        _sandbox(request).faults.replace_rules(body if body is not None else {})
    except ValueError as exc:
        return _fail(400, str(exc))
    return JSONResponse(_sandbox(request).faults.snapshot())


async def delete_faults(request: Request) -> Response:
    _sandbox(request).faults.clear_rules()
    return JSONResponse(_sandbox(request).faults.snapshot())


async def get_config(request: Request) -> Response:
    return JSONResponse(_sandbox(request).public_config())


async def patch_config(request: Request) -> Response:
    body = await _body(request)
    if body is None:
        body = {}  # PATCH with no body: just read the current config
    if not isinstance(body, dict):
        return _fail(400, "body must be a JSON object")
    store = _sandbox(request).store
    try:
        store.replace_settings(store.settings.patched(body))
    except ValueError as exc:
        return _fail(400, str(exc))
    return JSONResponse(_sandbox(request).public_config())


async def list_orders(request: Request) -> Response:
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in ALL_STATUSES:
        return _fail(400, f"status must be one of {list(ALL_STATUSES)}")
    orders = _sandbox(request).store.admin_orders(
        quote_id=query.get("quote_id") or None, partner=query.get("partner") or None, status=status
    )
    return JSONResponse({"orders": orders, "count": len(orders)})


async def list_quotes(request: Request) -> Response:
    query = request.query_params
    quotes = _sandbox(request).store.admin_quotes(
        quote_id=query.get("quote_id") or None, partner=query.get("partner") or None
    )
    return JSONResponse({"quotes": quotes, "count": len(quotes)})


async def force_order_status(request: Request) -> Response:
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return _fail(400, 'body must be {"status": "transfer_complete"|"transfer_expired"|"cancelled"}')
    try:
        order = _sandbox(request).store.force_status(request.path_params["order_id"], body["status"])
    except KeyError:
        return _fail(404, "order not found")
    except ValueError as exc:
        return _fail(400, str(exc))
    return JSONResponse({"order": order})


async def stats(request: Request) -> Response:
    sandbox = _sandbox(request)
    faults = sandbox.faults.snapshot()
    return JSONResponse({
        **sandbox.store.stats(),
        "faults": {"counters": faults["counters"], "totals": faults["totals"]},
        "requests": sandbox.request_counts(),
    })


async def reset(request: Request) -> Response:
    _sandbox(request).reset()
    return JSONResponse({"ok": True})


async def catalogue(request: Request) -> Response:
    return JSONResponse({
        "seed_event_id": SEED_EVENT_ID,
        "past_event_id": PAST_EVENT_ID,
        "tiny_inventory_event_id": TINY_EVENT_ID,
        "notes": {
            PAST_EVENT_ID: "event already started: POST /v1/quotes -> 422 EVENT_EXPIRED",
            TINY_EVENT_ID: "101/A has 2 seats (qty 3 -> INSUFFICIENT_QUANTITY); 101/B and section 102 are "
                           "sold out (-> NO_INVENTORY_AVAILABLE)",
            "unknown": "section '999' or row 'Z' -> 404 SECTION_NOT_FOUND; event '1' -> 404 EVENT_NOT_FOUND",
        },
        "events": _sandbox(request).store.catalogue_report(),
    })
