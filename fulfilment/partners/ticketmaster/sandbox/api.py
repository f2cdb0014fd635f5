"""Partner API and SecureRender handlers; each returns an ``Outcome`` (see ``pipeline``).

Paths (the client's base URL is e.g. ``http://127.0.0.1:18090``; polling column: 2017 doc/contract):

=======  ================================================  ==================  ========
method   path                                              endpoint name       polling
=======  ================================================  ==================  ========
GET      /partners/v1/events                               list_events         no
GET      /partners/v1/events/{event_id}                    event_details       no
GET      /partners/v1/events/{event_id}/availability       availability        yes
POST     /partners/v1/events/{event_id}/cart               reserve             yes
PUT      /partners/v1/events/{event_id}/cart/payment       payment             no
PUT      /partners/v1/events/{event_id}/cart               commit              yes
DELETE   /partners/v1/events/{event_id}/cart?cart_id=      delete_cart         yes
POST     /partners/v1/orders?order_token=                  order_management    yes
GET      /partners/v1/orders/unredeemed?days_from_purchase=N  unredeemed       no
GET      /partners/v1/polling/{poll_id}                    poll                -
POST     /marketplace/v1/securerender (and -staging)       securerender        no
=======  ================================================  ==================  ========
"""

from __future__ import annotations

import copy

from starlette.requests import Request

from . import assumed
from .errors import TMError
from .pipeline import Call, body_field
from .polling import polling_body
from .responses import Outcome
from .state import SandboxState
from .validation import (
    SecureRenderError,
    commit_request,
    device_request,
    json_body,
    payment_request,
    reserve_request,
    securerender_request,
)


def _event_id(call: Call) -> str:
    return str(call.request.path_params["event_id"])


async def list_events(call: Call) -> Outcome:
    return Outcome(200, call.sandbox.store.list_events())


async def event_details(call: Call) -> Outcome:
    return Outcome(200, call.sandbox.store.event_details(_event_id(call)))


async def availability(call: Call) -> Outcome:
    return Outcome(200, call.sandbox.store.availability(_event_id(call)))


async def reserve(call: Call) -> Outcome:
    call.sandbox.store.event_or_404(_event_id(call))
    body = await json_body(call.request, assumed.INVALID_RESERVE_STRUCTURE)
    return Outcome(200, call.sandbox.store.reserve(call.apikey, _event_id(call), reserve_request(body)))


async def payment(call: Call) -> Outcome:
    call.sandbox.store.event_or_404(_event_id(call))
    body = await json_body(call.request, assumed.INVALID_INPUT)
    return Outcome(200, call.sandbox.store.pay(call.apikey, _event_id(call), payment_request(body)))


async def commit(call: Call) -> Outcome:
    """The body is validated now; the cart when the commit is made (now, or later: see ``late``)."""
    call.sandbox.store.event_or_404(_event_id(call))
    body = await json_body(call.request, assumed.INVALID_RESERVE_STRUCTURE)
    return Outcome(200, call.sandbox.late_commits.commit(call.apikey, _event_id(call), commit_request(body)))


async def delete_cart(call: Call) -> Outcome:
    cart_id = call.request.query_params.get("cart_id")
    if not cart_id:
        raise TMError(assumed.INVALID_INPUT, f"{assumed.INVALID_INPUT.message}: cart_id is required")
    call.sandbox.store.delete(call.apikey, _event_id(call), cart_id)
    return Outcome(204)


async def order_management(call: Call) -> Outcome:
    token = call.request.query_params.get("order_token")
    if not token:
        raise TMError(assumed.INVALID_INPUT, f"{assumed.INVALID_INPUT.message}: order_token is required")
    device = device_request(await json_body(call.request, assumed.INVALID_INPUT))
    return Outcome(200, call.sandbox.store.order_management(call.apikey, token, device))


def _days(call: Call, name: str) -> int | None:
    raw = call.request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise TMError(assumed.INVALID_INPUT, f"{assumed.INVALID_INPUT.message}: {name} must be a non-negative integer")
    return int(raw)


async def unredeemed(call: Call) -> Outcome:
    from_purchase, before_event = _days(call, "days_from_purchase"), _days(call, "days_before_event")
    if from_purchase is None and before_event is None:
        raise TMError(assumed.INVALID_INPUT,
                      f"{assumed.INVALID_INPUT.message}: days_from_purchase or days_before_event is required")
    return Outcome(200, call.sandbox.store.unredeemed(call.apikey, from_purchase, before_event))


async def poll(call: Call) -> Outcome:
    sandbox = call.sandbox
    settings = sandbox.settings
    poll_id = str(call.request.path_params["poll_id"])
    state, job, wait = sandbox.polling.poll(poll_id, call.apikey, sandbox.clock(), settings.polling_wait_seconds,
                                            settings.polling_ttl_seconds)
    if state == "expired":
        raise TMError(assumed.POLL_EXPIRED)
    if state == "unknown" or job is None:
        raise TMError(assumed.POLL_NOT_FOUND)
    if state in ("early", "again"):
        if state == "early":
            sandbox.counters.bump("polls_before_wait")
        sandbox.counters.bump("polling_answers")
        return Outcome(202, polling_body(str(call.request.base_url), job.poll_id, wait))
    outcome = job.outcome
    if job.cart_id is not None and isinstance(outcome.body, dict):
        # A polled reserve shows the hold as it is now, not as it was when the work was done.
        hold = sandbox.store.hold_seconds(job.cart_id)
        body = copy.deepcopy(outcome.body)
        body["cart"]["hold_time"] = hold if hold is not None else 0
        return Outcome(outcome.status, body, dict(outcome.headers))
    return outcome


async def securerender(call: Call) -> Outcome:
    try:
        request = securerender_request(call.request.headers.get("x-user-id"), await call.request.body())
    except SecureRenderError as error:
        return Outcome(error.code, error.body())
    ok, body = call.sandbox.store.securerender(call.apikey, request)
    return Outcome(200 if ok else 400, body)


def poll_fault_name(request: Request, sandbox: SandboxState) -> str:
    """A poll's fault rule: ``poll_<operation>`` of the job its URL names (when set), else ``poll``."""
    return sandbox.faults.poll_name(sandbox.polling.endpoint_of(str(request.path_params["poll_id"])))


# --- where a cart call's cart id is (for the in-flight check) --------------------------------------


async def payment_cart_id(request: Request) -> str | None:
    return await body_field(request, "cartId")


async def commit_cart_id(request: Request) -> str | None:
    return await body_field(request, "cart_id")


async def delete_cart_id(request: Request) -> str | None:
    return request.query_params.get("cart_id") or None
