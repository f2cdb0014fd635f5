"""An in-memory TBB partner for property tests, written from the contract, not from our client.

What it models (shared/tbb-contract.md):
- quotes carry an `expires_at` and are single-use: creating an order consumes its quote
  atomically, so a second order on the same quote answers QUOTE_ALREADY_CONSUMED;
- an order on an expired quote answers QUOTE_EXPIRED and creates nothing;
- the account may lack a payment method (PAYMENT_NOT_CONFIGURED) for quotes and orders;
- orders can be read by id and looked up by quote (the ASSUMED endpoints);
- order statuses: awaiting_transfer, then transfer_complete | transfer_expired | cancelled.

The contract leaves two things open, and the fake lets a test pick either answer:
- which error wins for a quote that is both consumed and expired (`expiry_checked_first`);
- whether a request the client gave up on (timeout, reset, 504) is processed later: such
  requests wait in `pending` until the test lets the partner process them, with the
  partner's state *at that time* (account, quote consumed or expired).

It is as hostile as the sandbox's faults (fulfilment/partners/tbb/sandbox/faults.py) where the contract
allows it:
- order lookups lag behind commits: an order is invisible to `find_order_for_quote` until
  `lookup_lag` seconds of the clock after its creation (the sandbox's lookup_lag_seconds);
- a lookup may miss an order outright ("miss": a well-formed empty answer) or not tell
  ("has_more": an empty page announcing more, LookupUnknown);
- a quote both consumed and expired may answer QUOTE_EXPIRED (`expiry_checked_first`);
- any call may answer after the claim lease ("pause_*"), while the test lets another worker
  take over: the answer then concerns a purchase that has moved on.

`revealed` lists every order id that reached our code in an answer (created, found, read):
the test checks that none of them is ever dropped.

Faults are chosen per call by the test (`plan(operation, behaviour)`, one-shot, in order):
see BEHAVIOURS.  `SimulatedCrash` is a BaseException the steps do not catch: the worker
process died at that point.  Time comes from `clock` (a `Clock` that moves only when the
test says so, so that an example replays exactly).
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from fulfilment.partners.base import (
    AccountError,
    LookupUnknown,
    NotFound,
    Order,
    OrderAbsent,
    OrderFound,
    OrderLookup,
    OutcomeUnknown,
    PermanentError,
    Quote,
    QuoteAlreadyConsumed,
    QuoteExpired,
    QuoteRequest,
    TransientError,
)

UNIT_PRICE = Decimal("100.00")
LONG_TTL = 3600.0
MEDIUM_TTL = 60.0  # orderable until a minute (or a claim lease) has passed

# operation -> behaviours a test may plan for its next call
BEHAVIOURS: dict[str, tuple[str, ...]] = {
    "create_quote": (
        "transient",  # 503 before anything happened
        "crash",  # the worker dies before sending
        "crash_after",  # the quote is created, the worker dies before storing it
        "account",  # PAYMENT_NOT_CONFIGURED (this once)
        "permanent",  # NO_INVENTORY_AVAILABLE
        "short_ttl",  # a quote that expires inside the safety margin: never orderable
        "medium_ttl",  # orderable for a short while only
        "refuse_orders",  # every order on this quote is refused (INVALID_DELIVERY_DEADLINE)
        "pause_before",  # the call takes longer than the claim lease
        "pause_after",
    ),
    "create_order": (
        "transient",  # 503 before the request reached the order service: nothing ordered
        "account",  # PAYMENT_NOT_CONFIGURED (this once): nothing ordered
        "unknown_before",  # timeout/reset before processing: nothing ordered
        "unknown_after",  # committed, then the answer was lost
        "unknown_deferred",  # the client gave up; the partner processes the request later
        "crash",  # the worker dies before sending
        "crash_after",  # committed, then the worker died
        "crash_deferred",  # sent, the worker died, the partner processes it later
        "pause_before",  # the request is in flight longer than the claim lease
        "pause_after",  # committed, the answer comes after the claim lease
    ),
    "find_order_for_quote": (
        "transient",  # 503: the lookup failed
        "crash",  # the worker dies before asking
        "miss",  # a complete, well-formed answer that leaves the order out (as if none existed)
        "has_more",  # an empty page that announces more (LookupUnknown): it does not tell
        "pause_before",
        "pause_after",
    ),
    "get_order": ("transient", "crash", "pause_before", "pause_after"),
}


class SimulatedCrash(BaseException):
    """The worker died here; nothing after this point of the step runs (its claim stays held)."""


class Clock:
    """A clock that only moves when told to: quote lifetimes become deterministic."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.current = start or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=seconds)

    def datetime_module(self) -> Any:
        """A stand-in for the `datetime` module whose `datetime.now()` reads this clock."""
        clock = self

        class ClockedDatetime(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
                return clock.current if tz is None else clock.current.astimezone(tz)

        return SimpleNamespace(datetime=ClockedDatetime, UTC=dt.UTC, timedelta=dt.timedelta,
                               timezone=dt.timezone)


@dataclass
class FakeQuote:
    quote_id: str
    request: QuoteRequest
    issued_at: dt.datetime
    expires_at: dt.datetime  # what the partner told us
    expired_early_at: dt.datetime | None = None  # the partner let it die before `expires_at`
    refuse_orders_with: str | None = None  # a permanent, per-quote refusal (same answer every time)
    consumed_by: str | None = None

    def expired(self, at: dt.datetime) -> bool:
        if self.expired_early_at is not None and at >= self.expired_early_at:
            return True
        return at >= self.expires_at


@dataclass
class FakeOrder:
    order_id: str
    quote_id: str
    quantity: int  # the purchase's key (the test gives each purchase its own quantity)
    status: str
    created_at: dt.datetime
    quote_was_expired: bool  # recorded for the "never order on an expired quote" invariant


@dataclass(frozen=True)
class OrderCall:
    """One create_order call our code sent (not a deferred replay by the partner)."""

    quote_id: str
    at: dt.datetime
    advertised_expires_at: dt.datetime | None
    delivery_deadline: dt.datetime | None = None


@dataclass
class PendingOrder:
    quote_id: str
    delivery_type: str
    delivery_deadline: dt.datetime
    outcome: str | None = None


@dataclass
class FakePartner:
    name: str = "fake-tbb"
    clock: Callable[[], dt.datetime] = field(default_factory=lambda: Clock(), repr=False)
    expiry_checked_first: bool = False
    # Seconds (of `clock`) during which a new order is invisible to find_order_for_quote.
    lookup_lag: float = 0.0
    quote_ttl: float = LONG_TTL  # the lifetime of a quote without a ttl behaviour
    safety_margin: float = 30.0
    payment_configured: bool = True
    # Whether a missing payment method also refuses orders (it refuses quotes either way).
    orders_see_account_errors: bool = True
    quotes: dict[str, FakeQuote] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    pending: list[PendingOrder] = field(default_factory=list)
    order_calls: list[OrderCall] = field(default_factory=list)
    faults_met: list[str] = field(default_factory=list)  # "operation: behaviour", as the calls met them
    revealed: set[str] = field(default_factory=set)  # order ids our code received in an answer
    planned: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    # Called for "pause_*" behaviours with (operation, quantity of the purchase concerned, what):
    # the test runs whatever happens while this call hangs (lease lapses, another worker...).
    on_pause: Callable[[str, int, str], None] | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pausing: bool = False
    _while_hanging: str = ""

    # ---- test controls -----------------------------------------------------------------

    def plan(self, operation: str, behaviour: str) -> None:
        """One-shot behaviour of the next call of `operation`.  "pause_before:<what>" passes
        <what> to `on_pause` (what the test lets happen while the call hangs)."""
        assert behaviour.split(":")[0] in BEHAVIOURS[operation], (operation, behaviour)
        self.planned[operation].append(behaviour)

    def calm(self) -> None:
        """No more faults: planned behaviours dropped, the account fixed."""
        self.planned.clear()
        self.payment_configured = True

    def expire_early(self, quote_id: str) -> None:
        self.quotes[quote_id].expired_early_at = self.clock()

    def finish_transfer(self, order_id: str, status: str) -> None:
        order = self.orders[order_id]
        assert order.status == "awaiting_transfer"
        order.status = status

    def process_pending(self, index: int = 0) -> PendingOrder:
        """The partner finally processes a request whose client gave up on it."""
        request = self.pending.pop(index)
        try:
            self._commit_order(request.quote_id)
            request.outcome = "created"
        except Exception as error:  # noqa: BLE001  the answer goes nowhere: the client is gone
            request.outcome = type(error).__name__
        return request

    def orders_for(self, quantity: int) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.quantity == quantity]

    # ---- the Partner protocol ----------------------------------------------------------

    def create_quote(self, request: QuoteRequest, *, request_id: str, deadline: float | None = None) -> Quote:
        behaviour = self._next("create_quote")
        if behaviour == "transient":
            raise TransientError("SERVICE_UNAVAILABLE", "503 from the gateway", status=503)
        if behaviour == "crash":
            raise SimulatedCrash("worker died before quoting")
        if behaviour == "pause_before":
            self._pause("create_quote", request.quantity)
        if not self.payment_configured or behaviour == "account":
            raise AccountError("PAYMENT_NOT_CONFIGURED", "no payment method on the account", status=403)
        if behaviour == "permanent":
            raise PermanentError("NO_INVENTORY_AVAILABLE", "no seats left in that section", status=409)
        ttl = {"short_ttl": self.safety_margin / 2, "medium_ttl": MEDIUM_TTL}.get(behaviour or "", self.quote_ttl)
        issued = self.clock()
        quote = FakeQuote(
            quote_id=self._new_id("qt_"),
            request=request,
            issued_at=issued,
            expires_at=issued + dt.timedelta(seconds=ttl),
            refuse_orders_with="INVALID_DELIVERY_DEADLINE" if behaviour == "refuse_orders" else None,
        )
        self.quotes[quote.quote_id] = quote
        if behaviour == "crash_after":
            raise SimulatedCrash("worker died after the partner created a quote")
        if behaviour == "pause_after":
            self._pause("create_quote", request.quantity)
        return Quote(
            quote_id=quote.quote_id,
            expires_at=quote.expires_at,
            section_name=request.section_name,
            row_name=request.row_name or "A",
            quantity=request.quantity,
            unit_price=UNIT_PRICE,
            subtotal=UNIT_PRICE * request.quantity,
            currency="USD",
        )

    def create_order(
        self, quote_id: str, *, delivery_type: str, delivery_deadline: dt.datetime, request_id: str,
        deadline: float | None = None,
    ) -> Order:
        quote = self.quotes.get(quote_id)
        self.order_calls.append(OrderCall(quote_id, self.clock(), quote.expires_at if quote else None,
                                          delivery_deadline))
        behaviour = self._next("create_order")
        key = quote.request.quantity if quote else 0
        if behaviour == "transient":
            raise TransientError("SERVICE_UNAVAILABLE", "503 from the gateway", status=503)
        if behaviour == "unknown_before":
            raise OutcomeUnknown("READ_TIMEOUT", "connection reset before an answer")
        if behaviour == "crash":
            raise SimulatedCrash("worker died before ordering")
        if behaviour == "account":
            raise AccountError("PAYMENT_NOT_CONFIGURED", "no payment method on the account", status=403)
        if behaviour in ("unknown_deferred", "crash_deferred"):
            self.pending.append(PendingOrder(quote_id, delivery_type, delivery_deadline))
            if behaviour == "crash_deferred":
                raise SimulatedCrash("worker died with its order request in flight")
            raise OutcomeUnknown("GATEWAY_TIMEOUT", "504: the order service did not answer in time")
        if behaviour == "pause_before":
            self._pause("create_order", key)
        order = self._commit_order(quote_id)
        if behaviour == "unknown_after":
            raise OutcomeUnknown("READ_TIMEOUT", "the order was committed but the answer was lost")
        if behaviour == "crash_after":
            raise SimulatedCrash("worker died after the partner committed the order")
        if behaviour == "pause_after":
            self._pause("create_order", key)
        return self._reveal(order)

    def get_order(self, order_id: str, *, request_id: str, deadline: float | None = None) -> Order:
        behaviour = self._next("get_order")
        order = self.orders.get(order_id)
        self._read_faults("get_order", behaviour, order.quantity if order else 0, before=True)
        if order is None:
            raise NotFound("ORDER_NOT_FOUND", f"no order {order_id}", status=404)
        result = self._public(order)
        self._read_faults("get_order", behaviour, order.quantity, before=False)
        self.revealed.add(result.order_id)
        return result

    def find_order_for_quote(self, quote_id: str, *, request_id: str, deadline: float | None = None) -> OrderLookup:
        behaviour = self._next("find_order_for_quote")
        quote = self.quotes.get(quote_id)
        key = quote.request.quantity if quote else 0
        self._read_faults("find_order_for_quote", behaviour, key, before=True)
        found = [o for o in self.orders.values() if o.quote_id == quote_id]
        assert len(found) <= 1, "the fake itself broke: two orders on one quote"
        at = self.clock()
        visible = [o for o in found if (at - o.created_at).total_seconds() >= self.lookup_lag]
        if found and not visible:
            self.faults_met.append("find_order_for_quote: lagging")
        result: OrderLookup
        if behaviour == "has_more":
            result = LookupUnknown("has_more: an empty page, and the partner says more orders follow")
        elif visible and behaviour != "miss":
            result = OrderFound(self._public(visible[0]))
        else:
            result = OrderAbsent()
        self._read_faults("find_order_for_quote", behaviour, key, before=False)
        if isinstance(result, OrderFound):
            self.revealed.add(result.order.order_id)
        return result

    # ---- internals ---------------------------------------------------------------------

    def _commit_order(self, quote_id: str) -> FakeOrder:
        """The partner's order service: checks and the single-use consumption, atomically."""
        at = self.clock()
        quote = self.quotes.get(quote_id)
        if quote is None:
            raise PermanentError("QUOTE_NOT_FOUND", f"no quote {quote_id}", status=404)
        if not self.payment_configured and self.orders_see_account_errors:
            raise AccountError("PAYMENT_NOT_CONFIGURED", "no payment method on the account", status=403)
        checks = [self._check_consumed, self._check_expired]
        if self.expiry_checked_first:
            checks.reverse()
        for check in checks:
            check(quote, at)
        if quote.refuse_orders_with:
            raise PermanentError(quote.refuse_orders_with, "delivery_deadline is after the event", status=422)
        order = FakeOrder(
            order_id=self._new_id("TBB-"),
            quote_id=quote_id,
            quantity=quote.request.quantity,
            status="awaiting_transfer",
            created_at=at,
            quote_was_expired=quote.expired(at),
        )
        quote.consumed_by = order.order_id
        self.orders[order.order_id] = order
        return order

    @staticmethod
    def _check_consumed(quote: FakeQuote, at: dt.datetime) -> None:
        if quote.consumed_by is not None:
            raise QuoteAlreadyConsumed("QUOTE_ALREADY_CONSUMED", f"quote {quote.quote_id} was used", status=422)

    @staticmethod
    def _check_expired(quote: FakeQuote, at: dt.datetime) -> None:
        if quote.expired(at):
            raise QuoteExpired("QUOTE_EXPIRED", f"quote {quote.quote_id} expired", status=422)

    def _read_faults(self, operation: str, behaviour: str | None, key: int, *, before: bool) -> None:
        if before and behaviour == "transient":
            raise TransientError("SERVICE_UNAVAILABLE", "503 from the gateway", status=503)
        if before and behaviour == "crash":
            raise SimulatedCrash(f"worker died before {operation}")
        if behaviour == ("pause_before" if before else "pause_after"):
            self._pause(operation, key)

    def _new_id(self, prefix: str) -> str:
        # Unique across examples (the database outlives them), sortable in creation order.
        return f"{prefix}{next(self._ids):04d}-{uuid.uuid4().hex[:10]}"

    def _next(self, operation: str) -> str | None:
        queue = self.planned.get(operation)
        if not queue:
            return None
        behaviour, _, self._while_hanging = queue.popleft().partition(":")
        self.faults_met.append(f"{operation}: {behaviour}")
        return behaviour

    def _pause(self, operation: str, key: int) -> None:
        if self.on_pause is None or self._pausing:
            return  # no nesting: a call made while another one hangs behaves normally
        self._pausing = True
        try:
            self.on_pause(operation, key, self._while_hanging)
        finally:
            self._pausing = False

    def _reveal(self, order: FakeOrder) -> Order:
        self.revealed.add(order.order_id)
        return self._public(order)

    @staticmethod
    def _public(order: FakeOrder) -> Order:
        return Order(
            order_id=order.order_id,
            status=order.status,
            quote_id=order.quote_id,
            transfer_email="buyer@example.test",
            seat_range="1-2",
            row_name="A",
            unit_price=UNIT_PRICE,
            subtotal=UNIT_PRICE * order.quantity,
        )
