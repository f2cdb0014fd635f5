"""An in-memory Ticketmaster Partner API for tests: `FakeTicketmaster`, a drop-in `TicketmasterApi`.

Procrastinate-style (its `InMemoryConnector` lives in `procrastinate/testing.py`): the fake lives
beside the real adapter it fakes (api.py), subclasses it so that mypy holds it to the very method
signatures the flow calls (`TicketmasterFlow(FakeTicketmaster(...), config, clock=...)`), answers
with the same typed values (payloads.py) and raises the same typed errors (errors.py) as the real
client would after its own retries -- without HTTP, threads or sleeping.  Time is whatever the
`clock` given says (a clock the test moves), so that an example replays exactly.

What it models (seeds 003/004, the contract in assumed.py, the sandbox's rules in sandbox/store.py):

- carts: a reserve makes a cart (held `hold_seconds` of the clock from the reserve), a payment marks
  it paid (and may extend its hold by `payment_extension_seconds`), a commit turns a paid, live cart
  into an order, a delete ends it.  A cart whose hold ended is expired: a payment or a commit on it
  is refused with CartInvalid (90003), like TM; so is a commit of a deleted or committed cart;
- orders: `order_number` + `order_token`, the `source_account_id` sent with the commit, the
  `third_party_account_id` of the payment, one ticket per seat with a SafeTix token;
- the unredeemed-orders list (by `source_account_id`) hides orders younger than
  `unredeemed_lag_seconds` (it lags behind commits) and older than `days_from_purchase`; it gives
  order numbers only if `unredeemed_numbers` (the 2017 example gives none);
- order management (`order_tickets`) by order token; SafeTix tokens may be delayed until a delivery
  delay date (fault "delayed");
- polling: a call answered 202 has done its work already (as in the sandbox); its outcome is kept
  under the polling URL and served by `poll` once `wait_seconds` of the clock have passed (an
  earlier poll, or one of `repeats` more, gets another 202).

Faults are the test's to choose, per call: `plan(operation, fault)` queues a one-shot `Fault` for
the next call of `operation` (FIFO; "" or "ok" answers normally).  `FAULTS` lists which kinds each
operation takes; `operation` is the client's metric name: "reserve", "add_payment", "commit",
"delete_cart", "event_details", "unredeemed_orders", "order_tickets", "secure_render", and
"poll_<operation>" for the polls continuing one.  Kinds:

  not_sent ......... NotSent: the connection never reached TM (nothing done)
  rate_limited ..... 429 RateLimited(retry_at = clock + `Fault.retry_after`): refused unprocessed
  maintenance ...... Maintenance (20001, niterun): refused unprocessed
  transient ........ a read's 5xx after the client's retries: TmTransientError (nothing done)
  unknown .......... a cart call's 5xx before TM did anything: TmOutcomeUnknown, nothing done
  lost ............. a cart call processed, then its answer lost: TmOutcomeUnknown after the effect
                     (a commit whose order exists; no cart id for a lost reserve)
  deferred ......... commit: TmOutcomeUnknown now, the order made (or refused) when the test calls
                     `land_deferred` -- "processed later", checked against the cart at that moment
  crash_deferred ... the same, and the worker dies (SimulatedCrash) instead of seeing the error
  polling .......... 202 Polling(url, `Fault.wait_seconds`, operation), the outcome kept for `poll`
                     (after `Fault.repeats` more 202s)
  polling_refused .. commit: 202, and the commit itself is refused (SoldOut) when TM processes it
  again ............ a poll answered with one more 202 (wait `Fault.wait_seconds`)
  gone ............. TM forgets the polling URL (404 from now on): PollingExpired for a read,
                     TmOutcomeUnknown for a cart call, whatever its outcome was
  cart_invalid, sold_out, payment_refused, not_found ... definite refusals: CartInvalid (90003),
                     SoldOut (20052), PaymentRefused (20122), TmNotFound (404)
  short_hold ....... reserve: a cart held for `Fault.hold_seconds` only
  delayed .......... order_tickets: SafeTix tokens withheld until a delivery delay date
                     `Fault.delay_days` days ahead (event-local date), for every later call too
  crash_before ..... SimulatedCrash before anything is sent: the worker process died
  crash_after ...... the call did its work, then the worker died before reading the answer
  unavailable ...... 503 20001 outside niterun ("system down/unavailable"): Maintenance, refused
                     unprocessed (a commit refused so leaves its cart held and paid)
  stalled .......... a poll (or a read) hung past the client's read timeout: what the client raises
                     for a timeout (TmOutcomeUnknown for a cart call's poll, else TmTransientError);
                     nothing changes, the polling URL answers the next poll as before
  answer_late ...... commit: processed at once, its answer arrives after the client gave up
                     (TmOutcomeUnknown, the order made): "an answer after the lease"
  forbidden ........ event_details, unredeemed_orders: 403 (deprecated call, not allow-listed),
                     raised as the client raises the sandbox's 403 envelope

Polls also take `unknown`/`transient` (a poll answered 5xx: the URL stays alive).

The sandbox's other unkind modes are options of the fake (all off by default, like the sandbox):

- `one_time_nonces`: a payment nonce (`card.number`) that paid once is refused (PaymentRefused
  20122) afterwards; refused payments consume nothing;
- `unredeemed_hidden`: committed orders never appear in the unredeemed list;
- `delay_signal` ("error" | "service_level" | "date") for the `delayed` fault: the catalogue's
  withheld tokens with an error and a date, or only `service_level` SAFETIX with null tokens, or
  only a future delivery delay date;
- `empty_barcodes`: tickets come with `barcode: ""` beside a token (seed 003); SecureRender then
  refuses them (missing.barcode.attribute) and order management refreshes the token;
- `best_available_swaps`: a reserve naming a section with `accept_best_available` not false gets
  another section/row; with false it gets the section named;
- holds count down from each answer (the cart's end is the answer's time + its `hold_time`) and a
  payment extends them by `payment_extension_seconds`.

What our code sent is recorded, for the invariants of a test: `calls` (every call, in order, with
a global sequence number shared with carts and orders), `carts`, `orders` (`revealed` once a
Committed naming one reached the client), `commits` (each commit sent, and what the client was told
of it: `may_have_bought(source_account_id)` says whether an order may exist as far as the client
knows), `deferred` (commits TM still holds), `faults_met`, `early_polls` and `violations`: the fake
itself notes, when a call comes in, anything the client must never do --

- a commit of a cart that is expired, deleted, committed already, unpaid or unknown;
- a commit for a `source_account_id` that has an order already, or a commit of it still pending;
- a commit of a cart under another purchase's `source_account_id` than the reserve's (`owner_of`);
- a reserve for a purchase (`owner_of`) that has an order, or a commit TM still holds;
- a delete of a cart whose commit TM still holds (it must never run beside a commit);
- a payment of another amount than the cart's total.

Single-threaded by design (a test drives one call at a time): calls on one cart cannot overlap
here, so the records above stand in for "no concurrent cart calls".
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

import httpx
from pydantic import SecretStr

from fulfilment.partners.base import PartnerError
from fulfilment.partners.ticketmaster.api import TicketmasterApi
from fulfilment.partners.ticketmaster.errors import (
    CartInvalid,
    Maintenance,
    NotSent,
    PaymentRefused,
    PollingExpired,
    RateLimited,
    SoldOut,
    TmNotFound,
    TmPermanentError,
    TmTransientError,
    _with,
    error_from_response,
    for_cart_call,
    is_commit_definite,
    unknown,
)
from fulfilment.partners.ticketmaster.payloads import (
    CART_OPERATIONS,
    Availability,
    Cart,
    CartDeleted,
    CartItem,
    CartPayment,
    CartTotals,
    Committed,
    Device,
    EventDetails,
    Operation,
    OrderTicket,
    OrderTickets,
    Payment,
    Polling,
    RenderedTicket,
    RenderTicket,
    ReserveRequest,
    SecureEntry,
    SecureRenderResult,
    TicketError,
    UnredeemedOrder,
    delay_date_start,
)

BASE_URL = "https://tm.fake.test/partners/v1"
UNIT_PRICE = Decimal("54.41")  # the sandbox's FAQ event: one ticket at price level 1, all in
SAFETIX = "rotating_symbology"
DELAY_ERROR_CODE = 425  # as the sandbox (sandbox/assumed.py DELAYED_TOKEN_ERROR_CODE, itself ASSUMED)
DELAY_SIGNALS = ("error", "service_level", "date")

# Which fault kinds each operation takes ("" = none, answered normally).
_ANY = ("not_sent", "rate_limited", "maintenance", "unavailable", "crash_before", "crash_after")
_POLLS = ("again", "gone", "stalled", "unknown", "transient", "not_sent", "rate_limited", "maintenance", "unavailable",
          "crash_before", "crash_after")
FAULTS: dict[str, tuple[str, ...]] = {
    "event_details": (*_ANY, "transient", "stalled", "not_found", "forbidden"),
    "availability": (*_ANY, "transient", "polling"),
    "reserve": (*_ANY, "unknown", "lost", "polling", "sold_out", "cart_invalid", "short_hold"),
    "add_payment": (*_ANY, "unknown", "lost", "polling", "payment_refused", "cart_invalid"),
    "commit": (*_ANY, "unknown", "lost", "answer_late", "deferred", "crash_deferred", "polling", "polling_refused", "cart_invalid",
               "sold_out", "payment_refused", "unreadable"),
    "delete_cart": (*_ANY, "unknown", "lost", "polling"),
    "unredeemed_orders": (*_ANY, "transient", "stalled", "polling", "forbidden"),
    "order_tickets": (*_ANY, "transient", "stalled", "polling", "delayed", "not_found"),
    "secure_render": (*_ANY, "transient"),
    **{f"poll_{operation}": _POLLS for operation in ("reserve", "add_payment", "commit", "delete_cart",
                                                      "unredeemed_orders", "order_tickets")},
}


class FreshNonces:
    """A nonce source for tests (payment.NonceSource): a new `fake-valid-nonce-*` for every payment, as
    TM_PAYMENT_SOURCE=braintree mints one from a vaulted payment method."""

    name = "fresh"

    def nonce_for(self, partner_data: dict[str, Any]) -> SecretStr:
        return SecretStr(f"fake-valid-nonce-{uuid.uuid4().hex}")


class SimulatedCrash(BaseException):
    """The worker process died at this point of its step: nothing after it runs (its claim stays
    held until its lease ends).  A BaseException, so that no step's `except Exception` catches it."""


@dataclass(frozen=True)
class Fault:
    """What the next call of an operation meets (see the module's docstring for `kind`)."""

    kind: str = ""
    wait_seconds: float = 4.0  # polling / again: the 202's `wait`
    repeats: int = 0  # polling: more 202s before the outcome is served
    retry_after: float = 60.0  # rate_limited: Ratelimit-Expiry this many seconds of the clock ahead
    hold_seconds: float = 20.0  # short_hold: the cart's hold
    delay_days: int = 2  # delayed: the delivery delay date, this many days ahead (event-local)

    @classmethod
    def of(cls, fault: Fault | str | None) -> Fault:
        if isinstance(fault, Fault):
            return fault
        return cls(kind="" if fault in (None, "ok") else str(fault))


@dataclass
class FakeCart:
    cart_id: str
    event_id: str
    owner: str | None  # owner_of(reserve): the purchase it was reserved for, if the test says
    quantity: int
    reserved_at: dt.datetime
    hold_until: dt.datetime
    grand: Decimal
    currency: str
    seq: int
    state: str = "held"  # held | paid | committed | deleted (expired: see `state_at`)
    third_party_account_id: str | None = None
    order_number: str | None = None
    section: str = "101"
    row: str = "A"

    def state_at(self, at: dt.datetime) -> str:
        if self.state in ("held", "paid") and at >= self.hold_until:
            return "expired"
        return self.state

    def live(self, at: dt.datetime) -> bool:
        return self.state_at(at) in ("held", "paid")


@dataclass
class FakeTicket:
    barcode: str
    section: str
    row: str
    seat: str
    token: str


@dataclass
class FakeOrder:
    order_number: str
    order_token: str
    cart_id: str
    event_id: str
    source_account_id: str | None
    third_party_account_id: str | None
    owner: str | None  # the cart's owner
    created_at: dt.datetime
    seq: int
    how: str  # what the commit that made it was answered: ok | polling | lost | late | crash_after...
    grand: Decimal
    currency: str
    tickets: list[FakeTicket]
    revealed: bool = False  # a Committed naming it reached the client
    tokens_from: dt.datetime | None = None  # SafeTix tokens withheld before this instant (delayed)
    delay_date: dt.date | None = None
    redeemed: bool = False


@dataclass(frozen=True)
class Call:
    """One call the client made (whatever happened to it)."""

    seq: int
    operation: str
    at: dt.datetime
    fault: str
    cart_id: str | None = None
    owner: str | None = None  # reserve: owner_of(...); commit: the source_account_id sent
    outcome: str = ""


@dataclass
class DeferredCommit:
    """A commit TM received and will process later (`FakeTicketmaster.land_deferred`)."""

    event_id: str
    cart_id: str
    source_account_id: str | None
    sent_at: dt.datetime
    seq: int
    outcome: str | None = None  # once landed: "created" or the refusal's class name


@dataclass
class CommitRecord:
    """One commit the client sent, and what the client was told of it so far: "not_sent" (it never
    left: crash before, NotSent), "refused" (a definite refusal reached the client: this commit
    bought nothing), "ordered" (a Committed reached it), "unknown" (nothing definite yet: lost,
    5xx, 202 not polled to its end, processed later, the worker died...)."""

    seq: int
    cart_id: str
    source_account_id: str | None
    at: dt.datetime
    fault: str
    told: str = "unknown"


@dataclass
class _Pending:
    """The outcome of a call answered 202, kept under its polling URL."""

    operation: Operation
    outcome: Any  # the answer, or the PartnerError the call would have raised
    ready_at: dt.datetime
    repeats_left: int
    cart_id: str | None
    wait_seconds: float
    polls: int = 0


class FakeTicketmaster(TicketmasterApi):
    """An in-memory Ticketmaster Partner API with test-chosen faults (module docstring).

    `clock`: TM's time (carts' holds, the unredeemed list's lag, polling waits, delay dates), the
    same clock the flow is given.  `owner_of(event_id, request)`: which purchase a reserve is for
    (e.g. the `source_account_id` of the purchase asking for that quantity), so that the fake can
    tell a reserve for a purchase that has an order; None: not checked.
    """

    name = "ticketmaster"

    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime],
        hold_seconds: float = 600.0,
        payment_extension_seconds: float = 0.0,
        unit_price: Decimal = UNIT_PRICE,
        currency: str = "USD",
        unredeemed_lag_seconds: float = 0.0,
        unredeemed_numbers: bool = False,
        event_timezone: str | None = "America/Los_Angeles",
        event_start: dt.datetime | None = None,
        owner_of: Callable[[str, ReserveRequest], str | None] | None = None,
        base_url: str = BASE_URL,
        one_time_nonces: bool = False,
        unredeemed_hidden: bool = False,
        delay_signal: str = "error",
        empty_barcodes: bool = False,
        best_available_swaps: bool = False,
    ) -> None:
        # No super().__init__(): no HTTP client, no apikey; every public method is replaced below.
        self.clock = clock
        self.hold_seconds = hold_seconds
        self.payment_extension_seconds = payment_extension_seconds
        self.unit_price = unit_price
        self.currency = currency
        self.unredeemed_lag_seconds = unredeemed_lag_seconds
        self.unredeemed_numbers = unredeemed_numbers
        self.event_timezone = event_timezone
        self.event_start = event_start or (clock() + dt.timedelta(days=30))
        self.owner_of = owner_of
        self.base_url = base_url.rstrip("/")
        if delay_signal not in DELAY_SIGNALS:
            raise ValueError(f"delay_signal must be one of {DELAY_SIGNALS}")
        self.one_time_nonces = one_time_nonces
        self.unredeemed_hidden = unredeemed_hidden
        self.delay_signal = delay_signal
        self.empty_barcodes = empty_barcodes
        self.best_available_swaps = best_available_swaps
        self.used_nonces: set[str] = set()  # nonces that paid (one_time_nonces)
        self.carts: dict[str, FakeCart] = {}
        self.orders: dict[str, FakeOrder] = {}  # by order number
        self.deferred: list[DeferredCommit] = []  # commits TM holds, not processed yet
        self.landed: list[DeferredCommit] = []
        self.calls: list[Call] = []
        self.commits: list[CommitRecord] = []
        self.faults_met: list[str] = []  # "operation: kind", as the calls met them
        self.violations: list[str] = []
        self.early_polls = 0
        self.planned: dict[str, deque[Fault]] = defaultdict(deque)
        self.closed = False
        self._pending: dict[str, _Pending] = {}
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"FakeTicketmaster(carts={len(self.carts)}, orders={len(self.orders)}, deferred={len(self.deferred)})"

    def close(self) -> None:
        self.closed = True

    # ---- test controls ------------------------------------------------------------------------

    def plan(self, operation: str, fault: Fault | str) -> None:
        """The next call of `operation` meets `fault` (one-shot, after those planned before)."""
        planned = Fault.of(fault)
        if operation not in FAULTS:
            raise ValueError(f"no operation {operation!r} (known: {', '.join(sorted(FAULTS))})")
        if planned.kind and planned.kind not in FAULTS[operation]:
            raise ValueError(f"{operation} does not take the fault {planned.kind!r}")
        self.planned[operation].append(planned)

    def calm(self) -> None:
        """No more faults: every planned one dropped (lags and holds stay: that is how TM is)."""
        self.planned.clear()

    def land_deferred(self, index: int = 0) -> DeferredCommit:
        """TM processes a commit it received earlier (fault "deferred"), with the cart as it is now:
        an order if the cart is still paid and held, nothing otherwise."""
        commit = self.deferred.pop(index)
        try:
            order = self._make_order(commit.event_id, commit.cart_id, commit.source_account_id, how="late")
            commit.outcome = f"created {order.order_number}"
        except PartnerError as error:
            commit.outcome = type(error).__name__
        self.landed.append(commit)
        return commit

    def orders_of(self, source_account_id: str) -> list[FakeOrder]:
        return [order for order in self.orders.values() if order.source_account_id == source_account_id]

    def commit_pending(self, source_account_id: str) -> bool:
        """Whether TM holds a commit for this source_account_id that it has not processed yet."""
        return any(commit.source_account_id == source_account_id for commit in self.deferred)

    def may_have_bought(self, source_account_id: str) -> bool:
        """Whether, as far as the client was told, an order may exist for this source_account_id: an
        order exists, TM holds a commit of it, or a commit of it was sent without a definite answer.
        A purchase for which this holds must never reserve again, nor end FAILED."""
        return bool(self.orders_of(source_account_id)) or self.commit_pending(source_account_id) or any(
            commit.told in ("unknown", "ordered") for commit in self.commits
            if commit.source_account_id == source_account_id)

    def calls_of(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    # ---- reads ----------------------------------------------------------------------------------

    def event_details(self, event_id: str, *, request_id: str, deadline: float) -> EventDetails:
        fault = self._enter("event_details")
        self._refuse_unprocessed("event_details", fault)
        if fault.kind == "not_found":
            self._raise(_tm(TmNotFound("404", f"event {event_id} not found", status=404), "event_details"))
        if fault.kind == "forbidden":
            self._raise(_forbidden("event_details"))
        details = EventDetails(
            event_id=event_id, name="In-memory event", api_transactable=True, start_utc=self.event_start,
            start_date=None, timezone=self.event_timezone, currency=self.currency, ticket_limit=8, areas=(),
            price_levels=(), ticket_types=(),
        )
        return self._answer("event_details", fault, details)

    def availability(self, event_id: str, *, request_id: str, deadline: float) -> Availability | Polling:
        fault = self._enter("availability")
        self._refuse_unprocessed("availability", fault)
        answer = Availability(event_id=event_id, restrict_single=False, event_ticket_limit=8, tickets=())
        return self._answer("availability", fault, answer, pollable=True)

    def unredeemed_orders(self, days_from_purchase: int, *, request_id: str,
                          deadline: float) -> tuple[UnredeemedOrder, ...] | Polling:
        fault = self._enter("unredeemed_orders")
        self._refuse_unprocessed("unredeemed_orders", fault)
        if fault.kind == "forbidden":
            self._raise(_forbidden("unredeemed_orders"))
        now = self.clock()
        listed = tuple(
            UnredeemedOrder(
                order_source_account_id=order.source_account_id, event_id=order.event_id,
                purchased_at=order.created_at, event_at=self.event_start, email_status=1,
                order_number=order.order_number if self.unredeemed_numbers else None,
                purchase_email="tickets@example.com",
            )
            for order in sorted(self.orders.values(), key=lambda o: o.seq)
            if not order.redeemed and not self.unredeemed_hidden
            and (now - order.created_at).total_seconds() >= self.unredeemed_lag_seconds
            and order.created_at >= now - dt.timedelta(days=days_from_purchase)
        )
        return self._answer("unredeemed_orders", fault, listed, pollable=True)

    def order_tickets(self, order_token: str | SecretStr, device: Device, third_party_account_id: str, *,
                      request_id: str, deadline: float) -> OrderTickets | Polling:
        fault = self._enter("order_tickets")
        self._refuse_unprocessed("order_tickets", fault)
        token = order_token.get_secret_value() if isinstance(order_token, SecretStr) else order_token
        order = next((o for o in self.orders.values() if o.order_token == token), None)
        if fault.kind == "not_found" or order is None:
            self._raise(_tm(TmNotFound("404", "Order not found", status=404), "order_tickets", tm_code=90002))
        if order.third_party_account_id != third_party_account_id:
            self.violations.append(f"order management for {order.order_number} as {third_party_account_id}, "
                                   f"not the buyer {order.third_party_account_id}")
        if fault.kind == "delayed" and order.tokens_from is None:
            start = (self.clock() + dt.timedelta(days=fault.delay_days)).astimezone(dt.UTC).date()
            order.delay_date = start
            order.tokens_from = delay_date_start(start, self.event_timezone)
        return self._answer("order_tickets", fault, self._order_view(order), pollable=True)

    def secure_render(self, user_id: str, device: Device, tickets: Sequence[RenderTicket], *, request_id: str,
                      deadline: float) -> SecureRenderResult:
        fault = self._enter("secure_render")
        self._refuse_unprocessed("secure_render", fault)
        known = {t.barcode: (o, t) for o in self.orders.values() for t in o.tickets}
        rendered = []
        for wanted in tickets:
            if not wanted.barcode:
                rendered.append(RenderedTicket(wanted.event_id, wanted.section, wanted.row, wanted.seat, wanted.barcode,
                                               None, None, None, TicketError(400, "missing.barcode.attribute")))
                continue
            found = known.get(wanted.barcode)
            if found is None or found[0].third_party_account_id != user_id:
                rendered.append(RenderedTicket(wanted.event_id, wanted.section, wanted.row, wanted.seat, wanted.barcode,
                                               None, None, None, TicketError(10005, "ticket not found for this user")))
                continue
            found[1].token = f"tok-{uuid.uuid4().hex}"
            rendered.append(RenderedTicket(wanted.event_id, wanted.section, wanted.row, wanted.seat, wanted.barcode,
                                           SecretStr(found[1].token), SAFETIX, None, None))
        return self._answer("secure_render", fault, SecureRenderResult(tuple(rendered), device.device_type == "native"))

    # ---- cart calls -------------------------------------------------------------------------------

    def reserve(self, event_id: str, request: ReserveRequest, *, request_id: str, deadline: float) -> Cart | Polling:
        owner = self.owner_of(event_id, request) if self.owner_of is not None else None
        if owner is not None and (self.orders_of(owner) or self.commit_pending(owner)):
            self.violations.append(f"reserve for {owner}, whose order {[o.order_number for o in self.orders_of(owner)]} "
                                   f"exists or whose commit TM still holds")
        fault = self._enter("reserve", owner=owner)
        self._refuse_unprocessed("reserve", fault, cart=True)
        if fault.kind == "sold_out":
            self._raise(_sold_out("reserve", None))
        if fault.kind == "cart_invalid":
            self._raise(_tm(CartInvalid("21001", "Invalid reserve request data structure", status=400), "reserve",
                            tm_code=21001))
        now = self.clock()
        quantity = sum(ticket.quantity for ticket in request.tickets)
        hold = fault.hold_seconds if fault.kind == "short_hold" else self.hold_seconds
        cart = FakeCart(cart_id=f"cart-{next(self._ids):04d}-{uuid.uuid4().hex[:12]}", event_id=event_id, owner=owner,
                        quantity=quantity, reserved_at=now, hold_until=now + dt.timedelta(seconds=hold),
                        grand=self.unit_price * quantity, currency=self.currency, seq=next(self._seq),
                        section=request.section or "101", row=request.row or "A")
        if self.best_available_swaps and request.section and request.accept_best_available is not False:
            cart.section, cart.row = ("201" if request.section != "201" else "101"), "B"  # best available: elsewhere
        self.carts[cart.cart_id] = cart
        return self._cart_call_answer("reserve", fault, lambda: self._cart_view(cart), cart_id=None)

    def add_payment(self, event_id: str, cart_id: str, payment: Payment, *, request_id: str,
                    deadline: float) -> Cart | Polling:
        fault = self._enter("add_payment", cart_id=cart_id)
        self._refuse_unprocessed("add_payment", fault, cart=True, cart_id=cart_id)
        if fault.kind == "payment_refused":
            self._raise(_payment_refused("add_payment", cart_id))
        if fault.kind == "cart_invalid":
            self._raise(_cart_invalid("add_payment", cart_id))

        def pay() -> Cart:
            now = self.clock()
            cart = self.carts.get(cart_id)
            if cart is None or cart.event_id != event_id or not cart.live(now):
                raise _cart_invalid("add_payment", cart_id)
            nonce = payment.card.number.get_secret_value()
            if self.one_time_nonces and nonce in self.used_nonces:
                raise _payment_refused("add_payment", cart_id)
            self.used_nonces.add(nonce)
            if payment.amount != cart.grand or payment.currency != cart.currency:
                self.violations.append(f"payment of {payment.amount} {payment.currency} for cart {cart_id}, whose "
                                       f"total is {cart.grand} {cart.currency}")
            if cart.state == "held":
                cart.hold_until += dt.timedelta(seconds=self.payment_extension_seconds)
            cart.state = "paid"
            cart.third_party_account_id = payment.third_party_account_id
            return self._cart_view(cart)

        return self._cart_call_answer("add_payment", fault, pay, cart_id=cart_id)

    def commit(self, event_id: str, cart_id: str, source_account_id: str | None, *, request_id: str,
               deadline: float) -> Committed | Polling:
        self._check_commit(cart_id, source_account_id)
        record = CommitRecord(next(self._seq), cart_id, source_account_id, self.clock(), "crash_before", "not_sent")
        self.commits.append(record)
        fault = self._enter("commit", cart_id=cart_id, owner=source_account_id)  # raises on crash_before
        record.fault, record.told = fault.kind, "unknown"
        try:
            self._refuse_unprocessed("commit", fault, cart=True, cart_id=cart_id)
        except NotSent:
            record.told = "not_sent"
            raise
        except PartnerError as error:
            record.told = "refused" if is_commit_definite(error) else "unknown"
            raise
        definite = {"cart_invalid": _cart_invalid, "sold_out": _sold_out, "payment_refused": _payment_refused}
        if fault.kind in definite:
            record.told = "refused"
            self._raise(definite[fault.kind]("commit", cart_id))
        if fault.kind in ("deferred", "crash_deferred"):
            self.deferred.append(DeferredCommit(event_id, cart_id, source_account_id, self.clock(), next(self._seq)))
            if fault.kind == "crash_deferred":
                self._note_outcome("crash_deferred")
                raise SimulatedCrash("the worker died with its commit in flight (TM processes it later)")
            self._raise(_sent_then_failed("commit", cart_id, "504: the ticketing system did not answer in time"))

        def buy() -> Committed:
            if fault.kind == "polling_refused":
                raise _sold_out("commit", cart_id)
            order = self._make_order(event_id, cart_id, source_account_id, how=fault.kind or "ok")
            return self._committed(order)

        try:
            answer = self._cart_call_answer("commit", fault, buy, cart_id=cart_id)
        except PartnerError as error:
            if is_commit_definite(error):
                record.told = "refused"
            raise
        if isinstance(answer, Committed):
            record.told = "ordered"
        return answer

    def delete_cart(self, event_id: str, cart_id: str, *, request_id: str, deadline: float) -> CartDeleted | Polling:
        if any(commit.cart_id == cart_id for commit in self.deferred):
            self.violations.append(f"delete of cart {cart_id} while TM still holds a commit of it")
        fault = self._enter("delete_cart", cart_id=cart_id)
        self._refuse_unprocessed("delete_cart", fault, cart=True, cart_id=cart_id)

        def delete() -> CartDeleted:
            cart = self.carts.get(cart_id)
            if cart is None or cart.state == "committed":
                raise _cart_invalid("delete_cart", cart_id)
            if cart.live(self.clock()):
                cart.state = "deleted"
            return CartDeleted(cart_id)

        return self._cart_call_answer("delete_cart", fault, delete, cart_id=cart_id)

    # ---- polling ------------------------------------------------------------------------------------

    def poll(self, url: str, *, expect: Operation, request_id: str, deadline: float,
             cart_id: str | None = None) -> Any:
        """The outcome kept under `url` (or another 202): what the call itself would have answered."""
        operation = f"poll_{expect.value}"
        fault = self._enter(operation, cart_id=cart_id)
        cart_call = expect in CART_OPERATIONS
        self._refuse_unprocessed(operation, fault, cart=cart_call, cart_id=cart_id)
        if fault.kind == "gone":
            self._pending.pop(url, None)  # TM forgot it, for good
        pending = self._pending.get(url)
        if pending is None or pending.operation is not expect:
            if cart_call:
                self._raise(unknown("POLLING_GONE", f"{operation}: the polling URL is no longer known; the operation's "
                                    "outcome is not", operation=expect.value, status=404, cart_id=cart_id))
            self._raise(_tm(PollingExpired("POLLING_GONE", f"{operation}: the polling URL is no longer known",
                                           status=404), expect.value))
        pending.polls += 1
        now = self.clock()
        if now < pending.ready_at:
            self.early_polls += 1
            return self._done(operation, fault, Polling(url, max((pending.ready_at - now).total_seconds(), 1.0),
                                                        expect))
        if fault.kind == "again" or pending.repeats_left > 0:
            if fault.kind != "again":
                pending.repeats_left -= 1
            wait = fault.wait_seconds if fault.kind == "again" else pending.wait_seconds
            pending.ready_at = now + dt.timedelta(seconds=wait)
            return self._done(operation, fault, Polling(url, wait, expect))
        outcome = pending.outcome
        if fault.kind == "crash_after":
            self._note_outcome("crash_after")
            raise SimulatedCrash(f"the worker died after {operation} answered")
        if isinstance(outcome, Committed):
            self._reveal(outcome)
        if expect is Operation.COMMIT:
            self._told(pending.cart_id, outcome)
        if isinstance(outcome, PartnerError):
            self._raise(outcome)
        return self._done(operation, fault, outcome)

    # ---- internals ------------------------------------------------------------------------------------

    def _next(self, operation: str) -> Fault:
        queue = self.planned.get(operation)
        if not queue:
            return Fault()
        fault = queue.popleft()
        if fault.kind:
            self.faults_met.append(f"{operation}: {fault.kind}")
        return fault

    def _enter(self, operation: str, *, cart_id: str | None = None, owner: str | None = None) -> Fault:
        """Record the call and take its planned fault; a crash before sending ends here."""
        fault = self._next(operation)
        self.calls.append(Call(next(self._seq), operation, self.clock(), fault.kind, cart_id, owner))
        if fault.kind == "crash_before":
            raise SimulatedCrash(f"the worker died before sending {operation}")
        return fault

    def _raise(self, error: PartnerError) -> NoReturn:
        self._note_outcome(type(error).__name__)
        raise error

    def _note_outcome(self, outcome: str) -> None:
        last = self.calls[-1]
        self.calls[-1] = Call(last.seq, last.operation, last.at, last.fault, last.cart_id, last.owner, outcome)

    def _refuse_unprocessed(self, operation: str, fault: Fault, *, cart: bool = False,
                            cart_id: str | None = None) -> None:
        """The faults that leave TM untouched: not sent, 429, niterun, a 5xx before anything."""
        op = operation.removeprefix("poll_")
        error: PartnerError | None = None
        if fault.kind == "not_sent":
            error = _tm(NotSent("NOT_SENT", f"{operation}: ConnectError, the request was not sent"), op, cart_id=cart_id)
        elif fault.kind == "rate_limited":
            limited = RateLimited("RATE_LIMITED", "quota exceeded", status=429, retry_after=fault.retry_after)
            limited.retry_at = self.clock() + dt.timedelta(seconds=fault.retry_after)
            error = _tm(limited, op, cart_id=cart_id)
        elif fault.kind == "maintenance":
            error = _tm(Maintenance("20001", "The ticketing system is down for maintenance (niterun)", status=503), op,
                        tm_code=20001, cart_id=cart_id)
        elif fault.kind == "unavailable":
            error = _tm(Maintenance("20001", "Ticketing system is down/unavailable/niterun", status=503), op,
                        tm_code=20001, cart_id=cart_id)
        elif fault.kind == "stalled" and cart:
            error = unknown("NETWORK_ERROR", f"{operation}: ReadTimeout after the request may have been sent",
                            operation=op, cart_id=cart_id)
        elif fault.kind == "stalled":
            error = _tm(TmTransientError("NETWORK_ERROR", f"{operation}: ReadTimeout after the request may have been "
                                         "sent"), op)
        elif fault.kind == "transient" or (fault.kind == "unknown" and not cart):
            error = _tm(TmTransientError("502", f"{operation}: HTTP 502 from the gateway", status=502), op)
        elif fault.kind == "unknown":
            error = _sent_then_failed(op, cart_id, "HTTP 502 from the gateway")
        if error is not None:
            self._raise(error)

    def _cart_call_answer(self, operation: str, fault: Fault, effect: Callable[[], Any], *,
                          cart_id: str | None) -> Any:
        """Do a cart call's work, then answer as `fault` says: now, by 202, lost, or a dead worker."""
        try:
            outcome: Any = effect()
        except PartnerError as error:
            outcome = error
        if fault.kind in ("polling", "polling_refused"):
            return self._polling(operation, fault, outcome, cart_id)
        if fault.kind in ("lost", "answer_late"):
            self._note_outcome(fault.kind)
            answered = getattr(outcome, "cart_id", None) if operation != "reserve" else None
            raise _sent_then_failed(operation, cart_id or answered, "the connection was reset before the answer")
        if fault.kind == "unreadable" and isinstance(outcome, Committed):
            # An answer the client cannot read that still names the order (as api.py reports it: the
            # order number, never the token).
            self._note_outcome("unreadable")
            self._raise(unknown("MALFORMED_RESPONSE", f"{operation}: the answer could not be read", operation=operation,
                                status=200, cart_id=cart_id, order_number=outcome.order_number))
        if fault.kind == "crash_after":
            self._note_outcome("crash_after")
            raise SimulatedCrash(f"the worker died after TM did {operation}")
        if isinstance(outcome, PartnerError):
            self._raise(outcome)
        if isinstance(outcome, Committed):
            self._reveal(outcome)
        return self._done(operation, fault, outcome)

    def _answer(self, operation: str, fault: Fault, outcome: Any, *, pollable: bool = False) -> Any:
        if pollable and fault.kind == "polling":
            return self._polling(operation, fault, outcome, None)
        return self._done(operation, fault, outcome)

    def _done(self, operation: str, fault: Fault, answer: Any) -> Any:
        if fault.kind == "crash_after":
            self._note_outcome("crash_after")
            raise SimulatedCrash(f"the worker died after {operation} answered")
        self._note_outcome("polling" if isinstance(answer, Polling) else "ok")
        return answer

    def _polling(self, operation: str, fault: Fault, outcome: Any, cart_id: str | None) -> Polling:
        query = f"?cart_id={cart_id}" if cart_id else ""
        url = f"{self.base_url}/polling/{uuid.uuid4().hex.upper()}{query}"
        self._pending[url] = _Pending(Operation(operation), outcome,
                                      self.clock() + dt.timedelta(seconds=fault.wait_seconds), fault.repeats,
                                      cart_id, fault.wait_seconds)
        self._note_outcome("polling")
        return Polling(url, fault.wait_seconds, Operation(operation))

    def _check_commit(self, cart_id: str, source_account_id: str | None) -> None:
        """What a client must never commit (recorded when the commit comes in)."""
        now = self.clock()
        cart = self.carts.get(cart_id)
        if cart is None:
            self.violations.append(f"commit of cart {cart_id}, which TM never made")
        else:
            state = cart.state_at(now)
            if state != "paid":
                self.violations.append(f"commit of cart {cart_id}, which is {state} (hold until {cart.hold_until}, "
                                       f"now {now})")
            if cart.owner is not None and source_account_id != cart.owner:
                self.violations.append(f"commit of cart {cart_id} (reserved for {cart.owner}) under "
                                       f"source_account_id {source_account_id}")
        if source_account_id is not None:
            existing = [o.order_number for o in self.orders_of(source_account_id)]
            if existing or self.commit_pending(source_account_id):
                self.violations.append(f"commit of cart {cart_id} for {source_account_id}, whose order {existing} "
                                       "exists or whose commit TM still holds")

    def _make_order(self, event_id: str, cart_id: str, source_account_id: str | None, *, how: str) -> FakeOrder:
        """TM's commit: a paid, live cart of this event becomes an order, atomically."""
        now = self.clock()
        cart = self.carts.get(cart_id)
        if cart is None or cart.event_id != event_id:
            raise _tm(CartInvalid("21001", "Invalid reserve request data structure", status=400), "commit",
                      tm_code=21001, cart_id=cart_id)
        state = cart.state_at(now)
        if state != "paid":
            if state == "held":
                raise _tm(TmPermanentError("20120", "Payment is required before the cart can be committed", status=400),
                          "commit", tm_code=20120, cart_id=cart_id)
            raise _cart_invalid("commit", cart_id)
        n = next(self._ids)
        order = FakeOrder(
            order_number=f"FAKE-{n:05d}-{uuid.uuid4().hex[:8].upper()}", order_token=f"{uuid.uuid4()}-{n}",
            cart_id=cart_id, event_id=event_id, source_account_id=source_account_id,
            third_party_account_id=cart.third_party_account_id, owner=cart.owner, created_at=now, seq=next(self._seq),
            how=how, grand=cart.grand, currency=cart.currency,
            tickets=[FakeTicket(barcode=f"{n:06d}{seat:04d}{uuid.uuid4().int % 10**6:06d}", section=cart.section, row=cart.row,
                                seat=str(seat + 1), token=f"tok-{uuid.uuid4().hex}") for seat in range(cart.quantity)],
        )
        cart.state = "committed"
        cart.order_number = order.order_number
        self.orders[order.order_number] = order
        return order

    def _told(self, cart_id: str | None, outcome: Any) -> None:
        """A commit's outcome, read by polling, reached the client."""
        for commit in self.commits:
            if commit.cart_id == cart_id and commit.told == "unknown":
                if isinstance(outcome, Committed):
                    commit.told = "ordered"
                elif isinstance(outcome, PartnerError) and is_commit_definite(outcome):
                    commit.told = "refused"

    def _reveal(self, committed: Committed) -> None:
        if committed.order_number in self.orders:
            self.orders[committed.order_number].revealed = True

    def _committed(self, order: FakeOrder) -> Committed:
        return Committed(cart_id=order.cart_id, order_number=order.order_number,
                         order_token=SecretStr(order.order_token), grand_total=order.grand, currency=order.currency)

    def _cart_view(self, cart: FakeCart) -> Cart:
        now = self.clock()
        totals = CartTotals(currency=cart.currency, grand=cart.grand, fee=Decimal("0.00"), merchandise=cart.grand,
                            delivery=Decimal("0.00"), tax=Decimal("0.00"),
                            unpaid=Decimal("0.00") if cart.state == "paid" else cart.grand)
        item = CartItem(type="ticket", event_id=cart.event_id, section=cart.section, row=cart.row, start_seat="1",
                        end_seat=str(cart.quantity), num_seats=cart.quantity, tickets=(), totals=totals)
        payments = (CartPayment("1", "CC", cart.grand),) if cart.state == "paid" else ()
        hold = max(0, int((cart.hold_until - now).total_seconds()))
        return Cart(cart_id=cart.cart_id, hold_time_seconds=hold, items=(item,), totals=totals, currency=cart.currency,
                    payments=payments)

    def _order_view(self, order: FakeOrder) -> OrderTickets:
        withheld = order.tokens_from is not None and self.clock() < order.tokens_from
        signal = self.delay_signal if order.tokens_from is not None else "error"
        if self.empty_barcodes and not withheld:
            for ticket in order.tickets:  # no barcode to refresh by: order management issues new tokens
                ticket.token = f"tok-{uuid.uuid4().hex}"
        tickets = tuple(
            OrderTicket(
                order_number=order.order_number, event_id=order.event_id,
                barcode="" if self.empty_barcodes else ticket.barcode, section=ticket.section,
                row=ticket.row, seat=ticket.seat, seat_id=ticket.barcode[-8:], voided=False,
                secure_entry=SecureEntry(
                    token=None if withheld else SecretStr(ticket.token), render_type=SAFETIX, segment_type=None,
                    error=TicketError(DELAY_ERROR_CODE, f"SafeTix token not retrievable before {order.delay_date}")
                    if withheld and signal == "error" else None),
            )
            for ticket in order.tickets
        )
        return OrderTickets(customer_email="tickets@example.com",
                            service_level="SAFETIX" if signal == "service_level" else "ETICKET",
                            carrier="TICKETMASTER", voided=False, tickets=tickets,
                            delivery_delay_date=None if signal == "service_level" else order.delay_date,
                            third_party_account_id=order.third_party_account_id)


def _tm(error: Any, operation: str, *, tm_code: int | None = None, cart_id: str | None = None) -> Any:
    """`error` with the details every TM error carries (errors._with), as the client sets them."""
    return _with(error, operation=operation, tm_code=tm_code, severity="ERROR" if tm_code else None, cart_id=cart_id)


def _cart_invalid(operation: str, cart_id: str | None) -> CartInvalid:
    error: CartInvalid = _tm(CartInvalid("90003", "Invalid cart", status=400), operation, tm_code=90003,
                             cart_id=cart_id)
    return error


def _sold_out(operation: str, cart_id: str | None) -> SoldOut:
    error: SoldOut = _tm(SoldOut("20052", "No inventory found to match request", status=400), operation,
                         tm_code=20052, cart_id=cart_id)
    return error


def _forbidden(operation: str) -> PartnerError:
    """What the client raises for the sandbox's 403 envelope (ACCESS_DENIED): read by the client's own
    error table, so the fake and the client cannot disagree."""
    body = {"error": {"message": "Access denied: this apikey or client IP is not allowed to call this endpoint",
                      "code": 10003, "http_code": 403, "severity": "ERROR"}}
    return error_from_response(httpx.Response(403, json=body), operation=operation)


def _payment_refused(operation: str, cart_id: str | None) -> PaymentRefused:
    error: PaymentRefused = _tm(PaymentRefused("20122", "Payment not accepted", status=400), operation,
                                tm_code=20122, cart_id=cart_id)
    return error


def _sent_then_failed(operation: str, cart_id: str | None, what: str) -> PartnerError:
    """What the client raises for a cart call that may have been processed (errors.for_cart_call)."""
    return for_cart_call(_tm(TmTransientError("502", what, status=502), operation), operation=operation,
                         commit=operation == "commit", cart_id=cart_id)


__all__ = ["FAULTS", "Call", "CommitRecord", "DeferredCommit", "FakeCart", "FakeOrder", "FakeTicketmaster", "Fault",
           "SimulatedCrash"]
