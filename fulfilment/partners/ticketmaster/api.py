"""Low-level, typed HTTP client for the Ticketmaster Partner API (seeds 003/004, contract in
shared/ticketmaster-contract.md).  It speaks to TM and says exactly what happened; the core
decides what to do about it.

Rules this module keeps
-----------------------
- Every call takes `deadline`, a `time.monotonic()` instant by which it has returned: each
  exchange's connect/read/write/pool timeouts are cut to the time left, a retry is only started
  if it can finish before it, and waiting for another call on the same cart counts too.  No
  request is started with less than MIN_EXCHANGE_SECONDS left (DeadlineReached: nothing sent).
  The deadline is hard (fulfilment.partners.deadline): every socket operation and every chunk
  of an answer is cut at it, so an answer trickled in just under the read timeout cannot keep a
  call open past it; a cart call cut after sending is TmOutcomeUnknown, a read a transient error.
- `request_id` goes out as a header (assumed.REQUEST_ID_HEADER) to join logs.
- **Polling is a value, never a sleep.**  A call marked "Polling: Yes" may return
  `Polling(url, wait_seconds, operation)` instead of its result; `poll(url, expect=...)`
  continues it and returns the same union.  `url` never holds the apikey (stripped from TM's
  `polling_url`, added back on the wire only), so the core may store it.
- The apikey and secret query parameters (the order token) are added by
  transport.CredentialTransport under httpx: no URL that is logged, attached to an error or a
  response, or returned ever holds them; no message we build holds them (errors.scrub).
- Reads (event details, availability, unredeemed orders, order tickets, securerender, and the
  polling GETs of these) are retried on transient failures with tenacity: jittered exponential
  backoff, bounded attempts and time, within the deadline.
- **Cart calls (reserve, payment, commit, delete, and the polling GETs that continue them) are
  never retried once they may have been sent.**  Only a connection that was never established
  (NotSent) and a 429 (refused at the gateway) are sent again, within the deadline.  Calls on
  one cart are serialized inside this client (seed 004: no concurrent cart calls); across
  processes that is the core's job.
- A 429 is waited out inside the call only if `Ratelimit-Expiry` comes before the deadline;
  otherwise RateLimited(retry_at=...) is raised for the core to park the purchase.
- A 2xx we cannot read is an error (MalformedResponse on a read, OutcomeUnknown on a cart
  call), never a crash and never a silent success.  So is any status this API does not document.

What each failure means
-----------------------
Kinds are those of fulfilment.partners.base; the TM classes are in errors.py.

Every call:
  deadline passed before sending ............ DeadlineReached: nothing sent by this try
  connect error / connect or pool timeout ... retried within the deadline, then NotSent
                                              (transient): nothing reached TM, safe to send again
  429 ....................................... retried if Ratelimit-Expiry fits before the
                                              deadline, else RateLimited (transient, retry_at UTC,
                                              quota headers): refused unprocessed
  code 20001 (any status) ................... Maintenance (transient, not retried here): niterun
  401/403 without a documented code ......... TmAccountError: the apikey or an allow-list
  10004 / 10031 ............................. CaptchaRequired (account)
  90001, 20046, 10104, 10161, 10002 ......... TmPermanentError with the code
  another 4xx ............................... UnknownCode (permanent surprise), except on commit

event_details, availability, unredeemed_orders, order_tickets, secure_render (and their polls):
  read timeout, reset, 5xx, unreadable 2xx .. retried, then TmTransientError / MalformedResponse
  404 ....................................... TmNotFound (event / order / endpoint unknown)
  polling URL no longer known (404/410) ..... PollingExpired (transient): call again from scratch
  202 on event_details / secure_render ...... UnexpectedResponse (they never poll)
  secure_render 400 with per-ticket errors .. not an exception: SecureRenderResult with `error`s

reserve (and its polls):
  sent, then timeout/reset/5xx/unreadable ... TmOutcomeUnknown (cart_id if readable): a cart may
                                              exist, holding seats until its hold time; no money
  20052 ..................................... SoldOut (permanent)
  90003 / 21001 / "Invalid reserve request data structure" ... CartInvalid (our body is wrong)

add_payment (and its polls):
  sent, then timeout/reset/5xx/unreadable ... TmOutcomeUnknown (cart_id): payment may be on the
                                              cart; nothing is bought before a commit
  20122 / 20129 / 20152 ..................... PaymentRefused (account)
  90003 / 21001 ............................. CartInvalid: the cart expired or is not ours

commit (and its polls) -- money:
  200 with an order number or token ......... Committed (the order exists; unreadable optional
                                              fields are named, never fatal)
  a code in assumed.COMMIT_DEFINITE_CODES ... its kind (SoldOut, PaymentRefused, CartInvalid,
     or 429                                   Maintenance, RateLimited...): THIS request bought
                                              nothing.  CartInvalid after an earlier commit of the
                                              same cart may have been sent proves nothing (core).
  anything else once possibly sent: timeout, reset, 5xx (502/504...), unknown code, 4xx without
  envelope, unreadable 2xx, polling URL gone, a foreign polling URL
                                          ... TmOutcomeUnknown (cart_id, order_number if any):
                                              an order may exist; resolve by asking
                                              (unredeemed_orders by source_account_id), never by
                                              committing another cart

delete_cart (and its polls):
  204 / 200 ................................. CartDeleted
  sent, then timeout/reset/5xx .............. TmOutcomeUnknown: deleting again is harmless
  90003 / 404 ............................... CartInvalid / TmNotFound: the cart is gone already
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, overload
from urllib.parse import parse_qsl, quote

import httpx
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from fulfilment.partners.base import DeadlineReached, PartnerError, TransientError
from fulfilment.partners.deadline import DEADLINE, DeadlineHTTPTransport, DeadlineTransport
from fulfilment.partners.retry_log import retry_logger
from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.errors import (
    KNOWN_CODES,
    POLLING_GONE,
    Maintenance,
    MalformedResponse,
    NotSent,
    PollingExpired,
    RateLimited,
    TmOutcomeUnknown,
    TmTransientError,
    UnexpectedResponse,
    deadline_reached,
    error_from_response,
    for_cart_call,
    polling_url_gone,
    scrub,
    unknown,
)
from fulfilment.partners.ticketmaster.payloads import (
    CART_OPERATIONS,
    Availability,
    Cart,
    CartDeleted,
    Committed,
    Device,
    EventDetails,
    Operation,
    OrderTickets,
    Payment,
    Polling,
    RenderTicket,
    ReserveRequest,
    SecureRenderResult,
    UnredeemedOrder,
    cart_id_of,
    commit_body,
    order_number_of,
    order_tickets_body,
    parse_availability,
    parse_cart,
    parse_committed,
    parse_event_details,
    parse_order_tickets,
    parse_polling,
    parse_secure_render,
    parse_unredeemed,
    payment_body,
    reserve_body,
    secure_render_body,
)
from fulfilment.partners.ticketmaster.transport import (
    SECRET_PARAMS,
    CredentialTransport,
    ForeignPollingUrl,
    origin_of,
    sanitize_polling_url,
)

log = logging.getLogger(__name__)
_log_retry = retry_logger("ticketmaster", "tm", log, title="Ticketmaster")

# (operation, outcome, seconds) -> metrics; outcome is "ok", "polling" or the error code.
CallObserver = Callable[[str, str, float], None]

# An exchange is not started with less time than this left before the deadline.
MIN_EXCHANGE_SECONDS = 0.05
DEFAULT_BASE_URL = "https://app.ticketmaster.com/partners/v1"
SECURE_RENDER_PATH = "/marketplace/v1/securerender"  # preprod: /marketplace-staging/v1/securerender
FORCE_POLLING_HEADER = "X-TM-FORCE-POLLING"

# Paths from seed 003 (the others are in assumed.py).
AVAILABILITY_PATH = "/events/{event_id}/availability"
CART_PATH = "/events/{event_id}/cart"  # POST reserve, PUT commit
PAYMENT_PATH = "/events/{event_id}/cart/payment"
ORDERS_PATH = "/orders"

# What `poll` returns when the operation is only known at run time (e.g. read back from Postgres).
PollResult = Availability | Cart | Committed | CartDeleted | OrderTickets | tuple[UnredeemedOrder, ...] | Polling


@dataclass(frozen=True, slots=True)
class _Call:
    """One partner call: where it goes and what its answers mean."""

    operation: Operation
    method: str
    url: str
    parse: Callable[[Any], Any]
    idempotent: bool
    cart_id: str | None = None
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    secret_params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    polling: bool = False  # a GET of a polling URL
    # Wait for the answer until the deadline, not just the read timeout: a commit's answer (the order
    # token!) is worth the whole step's budget; one given up on early may be lost for good.
    patient: bool = False
    empty_ok: bool = False  # a 2xx without a body is the answer (delete)

    @property
    def pollable(self) -> bool:
        return self.operation.value in assumed.POLLABLE_OPERATIONS

    @property
    def metric(self) -> str:
        return f"poll_{self.operation.value}" if self.polling else self.operation.value


class TicketmasterApi:
    """The TM Partner API, one keep-alive httpx.Client per instance, safe to share between threads."""

    name = "ticketmaster"

    def __init__(
        self,
        base_url: str,
        apikey: str,
        *,
        securerender_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_attempts: int = 4,
        max_retry_seconds: float = 30.0,
        observe: CallObserver | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        apikey_placement: Literal["query", "header"] = assumed.APIKEY_PLACEMENT,
        client_ip: str | None = None,
        force_polling: bool = False,
        max_connections: int = 20,
    ) -> None:
        if not apikey:
            raise ValueError("an apikey is required")
        self._apikey = apikey
        self._base = httpx.URL(base_url.rstrip("/"))
        self._securerender = httpx.URL(securerender_url or str(self._base.copy_with(path=SECURE_RENDER_PATH)))
        for url in (self._base, self._securerender):
            if url.query or url.userinfo:
                raise ValueError("configure URLs without a query or credentials (the apikey is passed apart)")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._observe = observe
        self._sleep = sleep
        self._placement = apikey_placement
        headers = {"Accept": "application/json"}
        if client_ip:
            headers[assumed.CLIENT_IP_HEADER] = client_ip
        if force_polling:
            headers[FORCE_POLLING_HEADER] = "true"
        # Every call's deadline is hard, to the last chunk of its answer (partners/deadline.py).
        inner = DeadlineTransport(transport or DeadlineHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        ))
        self._http = httpx.Client(
            base_url=self._base,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=CredentialTransport(inner, apikey, frozenset({origin_of(self._base), origin_of(self._securerender)}),
                                          apikey_placement),
            follow_redirects=False,
            # Proxies from the environment would mount transports past CredentialTransport.
            trust_env=False,
        )
        self._carts = _CartLocks()

    def __repr__(self) -> str:
        return f"TicketmasterApi(base_url={str(self._base)!r}, apikey='***', apikey_placement={self._placement!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TicketmasterApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads ------------------------------------------------------------------------------

    def event_details(self, event_id: str, *, request_id: str, deadline: float) -> EventDetails:
        """Event details (Polling: No).  `start_utc`, `timezone` are None when TM does not give them."""
        call = _Call(Operation.EVENT_DETAILS, "GET", assumed.EVENT_DETAILS_PATH.format(event_id=_seg(event_id)),
                     lambda body: parse_event_details(body, event_id), idempotent=True)
        result: EventDetails = self._run(call, request_id, deadline)
        return result

    def availability(self, event_id: str, *, request_id: str, deadline: float) -> Availability | Polling:
        call = _Call(Operation.AVAILABILITY, "GET", AVAILABILITY_PATH.format(event_id=_seg(event_id)),
                     parse_availability, idempotent=True)
        result: Availability | Polling = self._run(call, request_id, deadline)
        return result

    def unredeemed_orders(self, days_from_purchase: int, *, request_id: str,
                          deadline: float) -> tuple[UnredeemedOrder, ...] | Polling:
        """Unredeemed orders of the last `days_from_purchase` days, each with the
        `order_source_account_id` sent at commit.  Lists unredeemed orders only: an order missing
        from it is not proof that no order exists."""
        if isinstance(days_from_purchase, bool) or not isinstance(days_from_purchase, int) or days_from_purchase < 0:
            raise ValueError("days_from_purchase must be a non-negative integer")
        call = _Call(Operation.UNREDEEMED_ORDERS, "GET", assumed.UNREDEEMED_PATH, parse_unredeemed,
                     idempotent=True, params={"days_from_purchase": str(days_from_purchase)})
        result: tuple[UnredeemedOrder, ...] | Polling = self._run(call, request_id, deadline)
        return result

    def order_tickets(self, order_token: str | SecretStr, device: Device, third_party_account_id: str, *,
                      request_id: str, deadline: float) -> OrderTickets | Polling:
        """The order's tickets and initial SafeTix tokens (seed 003: POST /orders?order_token=)."""
        token = order_token.get_secret_value() if isinstance(order_token, SecretStr) else order_token
        if not token:
            raise ValueError("an order token is required")
        call = _Call(Operation.ORDER_TICKETS, "POST", ORDERS_PATH, parse_order_tickets,
                     idempotent=assumed.ORDER_TICKETS_IS_IDEMPOTENT,
                     json=order_tickets_body(device, third_party_account_id), secret_params={"order_token": token})
        result: OrderTickets | Polling = self._run(call, request_id, deadline)
        return result

    def secure_render(self, user_id: str, device: Device, tickets: Sequence[RenderTicket], *, request_id: str,
                      deadline: float) -> SecureRenderResult:
        """Refresh SafeTix tokens.  `user_id` is the third_party_account_id sent with the payment.
        Per-ticket refusals (400 with a `tickets` list) come back as RenderedTicket.error."""
        if not user_id:
            raise ValueError("user_id (the third_party_account_id) is required")
        if not tickets:
            raise ValueError("at least one ticket is required")
        call = _Call(Operation.SECURE_RENDER, "POST", str(self._securerender), parse_secure_render,
                     idempotent=assumed.SECURE_RENDER_IS_IDEMPOTENT,
                     json=secure_render_body(device, list(tickets)), headers={"x-user-id": user_id})
        result: SecureRenderResult = self._run(call, request_id, deadline)
        return result

    # ---- cart calls ---------------------------------------------------------------------------

    def reserve(self, event_id: str, request: ReserveRequest, *, request_id: str, deadline: float) -> Cart | Polling:
        """Reserve seats in a new cart.  Not idempotent: every request that reaches TM makes a cart."""
        call = _Call(Operation.RESERVE, "POST", CART_PATH.format(event_id=_seg(event_id)), parse_cart,
                     idempotent=False, json=reserve_body(request))
        result: Cart | Polling = self._run(call, request_id, deadline)
        return result

    def add_payment(self, event_id: str, cart_id: str, payment: Payment, *, request_id: str,
                    deadline: float) -> Cart | Polling:
        call = _Call(Operation.ADD_PAYMENT, "PUT", PAYMENT_PATH.format(event_id=_seg(event_id)),
                     lambda body: parse_cart(body, cart_id=cart_id), idempotent=False,
                     cart_id=_required(cart_id, "cart_id"), json=payment_body(cart_id, payment))
        result: Cart | Polling = self._run(call, request_id, deadline)
        return result

    def commit(self, event_id: str, cart_id: str, source_account_id: str | None, *, request_id: str,
               deadline: float) -> Committed | Polling:
        """Buy the cart.  Sent at most once per call (unless it provably never left); see the table
        above for what each failure means.  `source_account_id` is how unredeemed_orders finds it."""
        call = _Call(Operation.COMMIT, "PUT", CART_PATH.format(event_id=_seg(event_id)),
                     lambda body: parse_committed(body, cart_id=cart_id), idempotent=False,
                     cart_id=_required(cart_id, "cart_id"), json=commit_body(cart_id, source_account_id), patient=True)
        result: Committed | Polling = self._run(call, request_id, deadline)
        return result

    def delete_cart(self, event_id: str, cart_id: str, *, request_id: str, deadline: float) -> CartDeleted | Polling:
        call = _Call(Operation.DELETE_CART, "DELETE", assumed.DELETE_CART_PATH.format(event_id=_seg(event_id)),
                     lambda body: CartDeleted(cart_id), idempotent=False,
                     cart_id=_required(cart_id, "cart_id"), params={"cart_id": cart_id}, empty_ok=True)
        result: CartDeleted | Polling = self._run(call, request_id, deadline)
        return result

    # ---- polling ----------------------------------------------------------------------------------

    @overload
    def poll(self, url: str, *, expect: Literal[Operation.AVAILABILITY], request_id: str, deadline: float,
             cart_id: str | None = None) -> Availability | Polling: ...

    @overload
    def poll(self, url: str, *, expect: Literal[Operation.RESERVE, Operation.ADD_PAYMENT], request_id: str,
             deadline: float, cart_id: str | None = None) -> Cart | Polling: ...

    @overload
    def poll(self, url: str, *, expect: Literal[Operation.COMMIT], request_id: str, deadline: float,
             cart_id: str | None = None) -> Committed | Polling: ...

    @overload
    def poll(self, url: str, *, expect: Literal[Operation.DELETE_CART], request_id: str, deadline: float,
             cart_id: str | None = None) -> CartDeleted | Polling: ...

    @overload
    def poll(self, url: str, *, expect: Literal[Operation.ORDER_TICKETS], request_id: str, deadline: float,
             cart_id: str | None = None) -> OrderTickets | Polling: ...

    @overload
    def poll(self, url: str, *, expect: Literal[Operation.UNREDEEMED_ORDERS], request_id: str, deadline: float,
             cart_id: str | None = None) -> tuple[UnredeemedOrder, ...] | Polling: ...

    @overload
    def poll(self, url: str, *, expect: Operation, request_id: str, deadline: float,
             cart_id: str | None = None) -> PollResult: ...

    def poll(self, url: str, *, expect: Operation, request_id: str, deadline: float,
             cart_id: str | None = None) -> Any:
        """GET a stored `Polling.url` (once; no sleeping here) for the operation `expect`: its result,
        another Polling, or the error the operation itself would have raised.  `cart_id` defaults to
        the URL's `cart_id` parameter."""
        if expect.value not in assumed.POLLABLE_OPERATIONS:
            raise ValueError(f"{expect.value} never answers with polling")
        try:
            clean = sanitize_polling_url(url, self._base)
        except ForeignPollingUrl as error:
            raise ValueError(str(error)) from None
        if cart_id is None:
            cart_id = dict(parse_qsl(httpx.URL(clean).query.decode("ascii", "replace"))).get("cart_id")
        parse: Callable[[Any], Any]
        if expect is Operation.AVAILABILITY:
            parse = parse_availability
        elif expect is Operation.RESERVE:
            parse = parse_cart
        elif expect is Operation.ADD_PAYMENT:
            parse = lambda body: parse_cart(body, cart_id=cart_id)  # noqa: E731
        elif expect is Operation.COMMIT:
            parse = lambda body: parse_committed(body, cart_id=cart_id)  # noqa: E731
        elif expect is Operation.DELETE_CART:
            parse = lambda body: CartDeleted(cart_id)  # noqa: E731
        elif expect is Operation.ORDER_TICKETS:
            parse = parse_order_tickets
        elif expect is Operation.UNREDEEMED_ORDERS:
            parse = parse_unredeemed
        else:  # pragma: no cover  (POLLABLE_OPERATIONS and this chain name the same calls)
            raise ValueError(f"{expect.value} never answers with polling")
        idempotent = expect not in CART_OPERATIONS
        call = _Call(expect, "GET", clean, parse, idempotent=idempotent, cart_id=cart_id,
                     polling=True, empty_ok=expect is Operation.DELETE_CART, patient=expect is Operation.COMMIT)
        return self._run(call, request_id, deadline)

    # ---- plumbing -----------------------------------------------------------------------------

    def _run(self, call: _Call, request_id: str, deadline: float) -> Any:
        lock_id = call.cart_id if call.operation in CART_OPERATIONS else None
        with self._carts.hold(lock_id, deadline):
            for attempt in self._retrying(call, deadline):
                with attempt:
                    return self._once(call, request_id, deadline)
        raise AssertionError("unreachable")  # pragma: no cover  (tenacity reraises)

    def _once(self, call: _Call, request_id: str, deadline: float) -> Any:
        started = time.monotonic()
        try:
            response = self._exchange(call, request_id, deadline)
        except (NotSent, DeadlineReached) as error:
            self._record(call, error.code, started)
            raise
        except httpx.RequestError as error:
            # Timeout, reset, dropped connection, undecodable body... after the request may have left.
            self._record(call, "NETWORK_ERROR", started)
            what = f"{type(error).__name__} after the request may have been sent"
            if call.idempotent:
                raise _with_op(TmTransientError("NETWORK_ERROR", f"{call.metric}: {what}"), call) from None
            raise unknown("NETWORK_ERROR", f"{call.metric}: {what}", operation=call.operation.value,
                          cart_id=call.cart_id) from None
        try:
            result, outcome = self._interpret(call, response)
        except PartnerError as error:
            self._record(call, error.code, started)
            raise
        self._record(call, outcome, started)
        return result

    def _interpret(self, call: _Call, response: httpx.Response) -> tuple[Any, str]:
        status = response.status_code
        if status >= 400:
            if call.operation is Operation.SECURE_RENDER and status == 400:
                answer = _per_ticket_refusals(response)
                if answer is not None:
                    return answer, "ticket_errors"
            raise self._refusal(call, response)
        body: Any = None
        try:
            if status == 202 and call.pollable:
                body = _decode(response)
                raw, wait = parse_polling(body)
                try:
                    url = sanitize_polling_url(raw, self._base)
                except ForeignPollingUrl as error:
                    raise _with_op(UnexpectedResponse("FOREIGN_POLLING_URL", str(error), status=status), call) from None
                if self._apikey in url:  # somewhere else than the `apikey` parameter: never store it
                    raise _with_op(UnexpectedResponse("SECRET_IN_POLLING_URL", "the polling URL embeds the apikey",
                                                      status=status), call)
                return Polling(url, wait, call.operation), "polling"
            if 200 <= status < 300 and status != 202:
                if status == 204 or not response.content.strip():
                    if not call.empty_ok:
                        raise MalformedResponse(f"HTTP {status} without a body")
                else:
                    body = _decode(response)
                    if isinstance(body, dict) and isinstance(body.get("error"), dict):
                        raise MalformedResponse(f"HTTP {status} carrying an error envelope")
                return call.parse(body), "ok"
            raise _with_op(UnexpectedResponse(f"HTTP_{status}", f"{call.metric}: HTTP {status} is not documented here",
                                              status=status), call)
        except (MalformedResponse, UnexpectedResponse) as error:
            _with_op(error, call)
            if call.idempotent:
                raise
            # A cart call answered with something we cannot read: it may well have been done.
            raise unknown(error.code, f"{call.metric}: {error.message}", operation=call.operation.value,
                          status=status, cart_id=call.cart_id or cart_id_of(body),
                          order_number=order_number_of(body)) from None

    def _refusal(self, call: _Call, response: httpx.Response) -> PartnerError:
        error = error_from_response(response, operation=call.operation.value, secrets=self._secrets(call))
        # 404/410 on a polling URL: the URL is gone, whatever code the gateway gives it, unless the
        # code is one of the operation's own documented answers (then it is that answer, read by polling).
        if call.polling and response.status_code in assumed.POLLING_GONE_STATUSES and getattr(
                error, "tm_code", None) not in KNOWN_CODES:
            if call.idempotent:
                return _with_op(PollingExpired(POLLING_GONE, f"{call.metric}: the polling URL is no longer known",
                                               status=response.status_code), call)
            return unknown(POLLING_GONE, f"{call.metric}: the polling URL is no longer known; the operation's outcome "
                           "is not", operation=call.operation.value, status=response.status_code, cart_id=call.cart_id)
        if call.operation in CART_OPERATIONS:
            return for_cart_call(error, operation=call.operation.value, commit=call.operation is Operation.COMMIT,
                                 cart_id=call.cart_id)
        return error

    def _exchange(self, call: _Call, request_id: str, deadline: float) -> httpx.Response:
        timeout = self._timeout(deadline, patient=call.patient)
        headers = {assumed.REQUEST_ID_HEADER: request_id, **(call.headers or {})}
        extensions: dict[str, Any] = {DEADLINE: deadline}
        if call.secret_params:
            extensions[SECRET_PARAMS] = call.secret_params
        try:
            return self._http.request(call.method, call.url, params=call.params, json=call.json, headers=headers,
                                      timeout=timeout, extensions=extensions)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise _with_op(NotSent("NOT_SENT", f"{call.metric}: {type(error).__name__}, the request was not sent"),
                           call) from None

    def _timeout(self, deadline: float, *, patient: bool = False) -> httpx.Timeout:
        left = deadline - time.monotonic()
        if left < MIN_EXCHANGE_SECONDS:
            raise deadline_reached("the call's deadline came before this request could be sent")
        read = left if patient else min(self._read_timeout, left)
        return httpx.Timeout(connect=min(self._connect_timeout, left), read=read, write=read, pool=left)

    def _retrying(self, call: _Call, deadline: float) -> Retrying:
        def retry(error: BaseException) -> bool:
            if isinstance(error, DeadlineReached):
                return False
            if isinstance(error, (NotSent, RateLimited)):
                return True  # never reached TM / refused unprocessed: safe for cart calls too
            if call.polling and isinstance(error, TmOutcomeUnknown) and not polling_url_gone(error):
                # A polling URL is a read of a result (assumed.py): reading it again is safe, for a
                # commit's too.  Only its definite answer, or 404/410, ends the polling.
                return True
            if not call.idempotent:
                return False
            if isinstance(error, (Maintenance, PollingExpired, UnexpectedResponse)):
                return False  # hours-long, or will not change by asking again now
            return isinstance(error, TransientError)

        return Retrying(
            retry=retry_if_exception(retry),
            stop=stop_any(stop_after_attempt(self._max_attempts), stop_before_delay(self._max_retry_seconds),
                          _StopBeforeDeadline(deadline)),
            wait=_wait,
            before_sleep=_log_retry,
            sleep=self._sleep,
            reraise=True,
        )

    def _secrets(self, call: _Call) -> tuple[str, ...]:
        return (self._apikey, *(call.secret_params or {}).values())

    def _record(self, call: _Call, outcome: str, started: float) -> None:
        if self._observe is None:
            return
        try:
            self._observe(call.metric, outcome, time.monotonic() - started)
        except Exception:  # a metrics hook must never cost us an answer (a commit's!)
            log.exception("tm metrics hook failed")


class _CartLocks:
    """One lock per cart id in use: calls on one cart never overlap inside this client."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def hold(self, cart_id: str | None, deadline: float) -> Iterator[None]:
        if cart_id is None:
            yield
            return
        with self._guard:
            lock, users = self._locks.setdefault(cart_id, (threading.Lock(), [0]))
            users[0] += 1
        try:
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise deadline_reached("the call's deadline came while another call on the same cart was in flight")
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[cart_id]


class _StopBeforeDeadline(stop_base):
    """Stop when the next try could not start before the call's deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + (retry_state.upcoming_sleep or 0.0) + MIN_EXCHANGE_SECONDS >= self.deadline


_backoff = wait_random_exponential(multiplier=0.25, max=8)


def _wait(state: RetryCallState) -> float:
    """Jittered exponential backoff; for a 429, until its Ratelimit-Expiry (plus a little jitter)."""
    base = _backoff(state)
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, RateLimited) and error.retry_at is not None:
        return max(base, error.retry_at.timestamp() - time.time() + random.uniform(0.0, 0.25))
    return base




def _per_ticket_refusals(response: httpx.Response) -> SecureRenderResult | None:
    """Seed 003: securerender refuses single tickets with a 400 whose body lists the tickets, each
    with its `error`.  That is an answer, not a failure of the call."""
    try:
        body = _decode(response)
        if isinstance(body, dict) and isinstance(body.get("tickets"), list):
            return parse_secure_render(body)
    except MalformedResponse:
        pass
    return None


def _decode(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)
    except (ValueError, RecursionError):
        raise MalformedResponse(f"HTTP {response.status_code} with a non-JSON body") from None


def _with_op(error: Any, call: _Call) -> Any:
    error.operation = call.operation.value
    if getattr(error, "cart_id", None) is None:
        error.cart_id = call.cart_id
    return error


def _seg(value: str) -> str:
    """A path segment: never lets an id change the path."""
    if not value:
        raise ValueError("an id is required")
    return quote(value, safe="")


def _required(value: str, name: str) -> str:
    if not value:
        raise ValueError(f"{name} is required")
    return value


__all__ = ["CallObserver", "PollResult", "TicketmasterApi", "scrub"]
