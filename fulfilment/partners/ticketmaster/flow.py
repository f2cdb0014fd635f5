"""How a purchase goes through Ticketmaster: the partner part of each step (flowkit/flow.py).

    quote    RECEIVED/PAUSED: the event's start and zone (the request's, else event details, cached,
             never failing the purchase) -> reserve (named seats: accept_best_available false) ->
             price and seat checks -> payment with one nonce per payment (payment.py) -> QUOTED
             (quote_id = the cart id; quote_expires_at = when the last answer's call was SENT + that
             answer's hold_time)
    order    QUOTED: the intent (ORDERING, order evidence may_exist) -> commit, with
             source_account_id = a stable hash of the purchase id -> AWAITING_TICKETS
    resolve  ORDER_UNKNOWN: continue the commit's stored polling URL (kept through stalls, resets and
             5xx; forgotten only on a definite answer or 404/410), else look for the order in
             the unredeemed orders by source_account_id; absence proves nothing -> NEEDS_ATTENTION
             once the lookups are used up.  Never a second commit or reserve while an order may exist.
    deliver  AWAITING_TICKETS: order management -> tickets stored (tokens encrypted) ->
             TICKETS_ISSUED, or parked until the delivery delay date (`purchase.tickets_delayed`).

Long waits are parked in Postgres (`flowkit.fencing.park`), never slept through or retried by the
broker: a 202's `wait` (the polling URL, without the apikey, kept in partner_data.pending and
continued by whoever claims the purchase next, never sent afresh), a 429 until Ratelimit-Expiry,
niterun until 02:00 in the event's time zone.

Carts: one worker at a time works on a purchase (the claim), so calls on its cart are serialized
across processes; the client serializes them within one.  A cart we give up on (price above the
limit, short hold, a refusal after reserve, an unknown payment) is deleted, never while a commit of
it may be in flight; a cart we could not delete yet is kept in partner_data.abandoned and deleted
by the purchase's next step.  What partner_data holds is listed at `TmData`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

from fulfilment import state_machine, ticket_crypto
from fulfilment.db import autocommit, session_scope
from fulfilment.flowkit.fencing import (
    Claim,
    Next,
    failure,
    keep_answer,
    note_late,
    park,
    partner_request_id,
    record,
    release_and_retry,
    step_deadline,
    step_started,
)
from fulfilment.flowkit.flow import StepContext
from fulfilment.flowkit.orders import (
    STILL_RESOLVING,
    absence_policy_applies,
    keep_late_order,
    resolve_backoff,
    wait_or_hold,
)
from fulfilment.flowkit.tickets import Refreshed
from fulfilment.partners.base import AccountError, DeadlineReached, PartnerError, PermanentError, TransientError
from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.api import TicketmasterApi
from fulfilment.partners.ticketmaster.errors import (
    CartInvalid,
    Maintenance,
    NotSent,
    RateLimited,
    TmNotFound,
    TmOutcomeUnknown,
    is_commit_definite,
    polling_url_gone,
)
from fulfilment.partners.ticketmaster.payloads import (
    Address,
    Card,
    Cart,
    Committed,
    Device,
    EventDetails,
    Operation,
    OrderTickets,
    Payment,
    Polling,
    RenderTicket,
    ReserveRequest,
    ReserveTicket,
    UnredeemedOrder,
    delay_date_start,
)
from fulfilment.partners.ticketmaster.payment import (
    NONCE_USED,
    SEALED_NONCE,
    NonceSource,
    PaymentSetupError,
    nonce_source,
    request_nonce,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import OrderEvidence, StaleTransition, State
from fulfilment.statements import Row
from fulfilment.step_names import StepName
from models import PartnerQuote, Purchase, Ticket

log = logging.getLogger(__name__)

NAME = "ticketmaster"
EVENT_CACHE_SECONDS = 600.0
# Niterun ends at this event-local hour (contract: 00:00-02:00); a purchase parked for it wakes then.
NITERUN_END_HOUR = 2
# When TM gave no Ratelimit-Expiry: how long a parked purchase waits.
QUOTA_FALLBACK_SECONDS = 60.0
# A SafeTix ticket is refreshed this long before its event starts (seed 003).
REFRESH_BEFORE_START = dt.timedelta(hours=20)
CENT = Decimal("0.01")
# The unredeemed list's window is N days: a commit this close to its edge may already be out of it.
LIST_WINDOW_MARGIN = dt.timedelta(hours=1)
# SafeTix tokens still missing after the delivery delay date (or without one): ask again this often.
TOKENS_LATE_RETRY_SECONDS = 300.0


def source_account_id(purchase_id: object) -> str:
    """What the commit sends as `source_account_id` and the unredeemed-orders list gives back: a
    stable hash of the purchase id (no customer data, the same on every attempt)."""
    return hashlib.sha256(f"ticket-fulfilment:{purchase_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TmConfig:
    """What the flow needs besides the client: the operator's billing identity and payment method,
    this installation's device, the ticket key."""

    device: Device
    first_name: str
    last_name: str
    email: str
    phone: str
    payment_type: str
    nonces: NonceSource
    payment_cin: SecretStr | None
    address: Address | None
    ticket_key: SecretStr
    min_hold_seconds: float
    unredeemed_days: int
    unavailable_retry_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TmConfig:
        def need(value: Any, name: str) -> Any:
            if value is None:
                raise ValueError(f"{name.upper()} is required when TM_ENABLED is set")
            return value

        address = None
        if settings.tm_billing_address_line1 and settings.tm_billing_city and settings.tm_billing_region \
                and settings.tm_billing_postal_code:
            address = Address(line1=settings.tm_billing_address_line1, line2="", city=settings.tm_billing_city,
                              region_abbrev=settings.tm_billing_region, postal_code=settings.tm_billing_postal_code,
                              country_code=settings.tm_billing_country_code, country_id=settings.tm_billing_country_id)
        return cls(
            device=Device(device_id=need(settings.tm_device_id, "tm_device_id"), device_type="web", device_os="other"),
            first_name=need(settings.tm_billing_first_name, "tm_billing_first_name"),
            last_name=need(settings.tm_billing_last_name, "tm_billing_last_name"),
            email=need(settings.tm_billing_email, "tm_billing_email"),
            phone=need(settings.tm_billing_phone, "tm_billing_phone"),
            payment_type=settings.tm_payment_type,
            nonces=nonce_source(settings),
            payment_cin=settings.tm_payment_cin,
            address=address,
            ticket_key=need(settings.ticket_key, "ticket_key"),
            min_hold_seconds=settings.tm_min_hold_seconds,
            unredeemed_days=settings.tm_unredeemed_days,
            unavailable_retry_seconds=settings.tm_unavailable_retry_seconds,
        )


class TmData:
    """partner_data of a TM purchase (a JSON object), read and written by this flow only.

    delivery, ticket_type_id, price_level_id, third_party_account_id, event_start, event_timezone,
    device (the fan's, or None): from the request
    payment_nonce: the request's nonce, sealed (ticket_crypto); removed once a payment used it, and
    payment_nonce_used set instead (payment.py)
    event: {"start": ISO or None, "timezone": name or None, "source"}: from the request, else event details
    cart: {"id", "reserved_at" (ISO: when the reserve was sent), "hold_seconds", "expires_at" (the last
    answer's call sent + its hold_time), "paid", "grand", "currency", "seats"}
    pending: {"operation", "url" (never with the apikey), "not_before" (ISO), "sent_at" (ISO)}: dropped
    only on a definite answer or a gone URL (404/410)
    commit_sent_at: when the commit was sent (whether the unredeemed list can still show its order)
    abandoned: [cart ids still to delete]
    order_token: the commit's order token, encrypted (ticket_crypto)
    delay_date / delay_notified: the SafeTix delivery delay date, and whether the buyer was told
    """

    def __init__(self, purchase: Purchase) -> None:
        self.values: dict[str, Any] = dict(purchase.partner_data or {})

    def __getitem__(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, **changes: Any) -> dict[str, Any]:
        self.values.update(changes)
        return self.values

    def without(self, *keys: str) -> dict[str, Any]:
        for key in keys:
            self.values.pop(key, None)
        return self.values


class _Stop(Exception):
    """The step ended (recorded, parked or released): return `following` from the flow."""

    def __init__(self, following: Next | None = None) -> None:
        super().__init__("step ended")
        self.following = following


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _parse(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def niterun_end(now: dt.datetime, timezone: str | None) -> dt.datetime | None:
    """The next 02:00 in the event's zone after `now` (None: zone unknown)."""
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        return None
    local = now.astimezone(zone)
    end = local.replace(hour=NITERUN_END_HOUR, minute=0, second=0, microsecond=0)
    if end <= local:
        end += dt.timedelta(days=1)
    return end.astimezone(dt.UTC)


class TicketmasterFlow:
    name = NAME
    ordered_state = State.AWAITING_TICKETS
    limits_resolve_attempts = False  # it counts its own waits (a commit polled against its cart's window)

    def __init__(self, api: TicketmasterApi, config: TmConfig, *, clock: Callable[[], dt.datetime] = _now) -> None:
        self.api = api
        self.config = config
        self._clock = clock
        self._events: dict[str, tuple[float, EventDetails]] = {}
        self._events_lock = threading.Lock()

    def close(self) -> None:
        self.api.close()

    def device_of(self, partner_data: dict[str, Any] | None, given: dict[str, Any] | None = None) -> Device:
        """The fan's device (seed 003: per device/app install), as given now (an on-demand refresh) or
        by the request; this server's TM_DEVICE_ID only as a fallback (README: its risk)."""
        found = given or (partner_data or {}).get("device")
        if found:
            return Device(device_id=found["device_id"], device_type=found["device_type"], device_os=found["device_os"])
        return self.config.device

    # ---- quote: reserve + payment ---------------------------------------------------------------

    def quote(self, purchase: Purchase, step: StepContext) -> Next | None:
        data = TmData(purchase)
        try:
            purchase = self._delete_abandoned(purchase, data, step)
            if data["event"] is None:
                purchase = self._learn_event(purchase, data, step)
            cart = data["cart"]
            if cart is not None and data["pending"] is None and _at(cart["expires_at"]) <= self._clock():
                # TM released it at its hold's end: nothing to delete, reserve again.
                data.without("cart")
                cart = None
            if data["pending"] is not None:
                purchase, cart = self._continue_cart_call(purchase, data, step)
            if cart is None:
                purchase, cart = self._reserve(purchase, data, step)
            if not cart.get("paid"):
                purchase, cart = self._pay(purchase, data, step)
            return self._quoted(purchase, data, step)
        except _Stop as stop:
            return stop.following

    def _learn_event(self, purchase: Purchase, data: TmData, step: StepContext) -> Purchase:
        """The event's start and time zone: from the request when it gave both (no call: Retrieve
        Event Details is deprecated at TM), else from event details as a fallback.  That call never
        fails a purchase that could otherwise be bought: a 404, a 403, a quota or an unreadable
        answer leaves what the request gave, and what needs the rest says so (README)."""
        given_start, given_zone = _parse(data["event_start"]), data["event_timezone"]
        if given_start is not None and given_zone:
            return self._save(purchase, data.set(event={"start": _iso(given_start), "timezone": given_zone,
                                                        "source": "request"}))
        try:
            details = self._event_details(purchase.event_id, partner_request_id(purchase, "event"),
                                          step_deadline(step.settings, step.started))
        except PartnerError as error:
            log.warning("purchase %s: event details for %s unavailable (%s); going on with what the request gave "
                        "(start %s, time zone %s)", purchase.id, purchase.event_id, error.code,
                        "given" if given_start else "unknown", given_zone or "unknown")
            return self._save(purchase, data.set(event={
                "start": _iso(given_start) if given_start else None, "timezone": given_zone,
                "source": f"request (event details: {error.code})"}))
        start = given_start or details.start_utc
        return self._save(purchase, data.set(event={"start": _iso(start) if start else None,
                                                     "timezone": given_zone or details.timezone,
                                                     "source": "event details"}))

    def _event_details(self, event_id: str, request_id: str, deadline: float) -> EventDetails:
        now = time.monotonic()
        with self._events_lock:
            cached = self._events.get(event_id)
        if cached is not None and now - cached[0] < EVENT_CACHE_SECONDS:
            return cached[1]
        details = self.api.event_details(event_id, request_id=request_id, deadline=deadline)
        with self._events_lock:
            self._events[event_id] = (now, details)
        return details

    def _reserve(self, purchase: Purchase, data: TmData, step: StepContext) -> tuple[Purchase, dict[str, Any]]:
        request = ReserveRequest(
            tickets=(ReserveTicket(ticket_type_id=data["ticket_type_id"], quantity=purchase.quantity,
                                   price_level_id=data["price_level_id"]),),
            section=purchase.section_name, row=purchase.row_name,
            # Best available is TM's default: seats elsewhere than asked.  Named seats are held as named.
            accept_best_available=False if purchase.section_name else None,
        )
        sent_at = self._clock()
        answer = self._call(purchase, data, step, "reserve", lambda deadline: self.api.reserve(
            purchase.event_id, request, request_id=partner_request_id(purchase, "reserve"), deadline=deadline))
        return self._cart_answer(purchase, data, step, answer, Operation.RESERVE, sent_at)

    def _nonce(self, purchase: Purchase, data: TmData, step: StepContext) -> SecretStr:
        """This payment's nonce: the request's own (sealed), else one from the configured source.
        A source that cannot give one pauses the purchase with the reason (its cart deleted)."""
        try:
            return request_nonce(self.config.ticket_key, data.values) or self.config.nonces.nonce_for(data.values)
        except PaymentSetupError as error:
            self._give_up(purchase, data, step, State.PAUSED, f"payment setup: {error.code}",
                          {"last_error": str(error)[:2000]})
            raise AssertionError("unreachable") from None

    def _pay(self, purchase: Purchase, data: TmData, step: StepContext) -> tuple[Purchase, dict[str, Any]]:
        cart = data["cart"]
        payment = Payment(
            first_name=self.config.first_name, last_name=self.config.last_name, home_phone=self.config.phone,
            email_address=self.config.email, amount=Decimal(cart["grand"]), currency=cart["currency"],
            card=Card(number=self._nonce(purchase, data, step), cin=self.config.payment_cin),
            third_party_account_id=data["third_party_account_id"], type=self.config.payment_type,
            address=self.config.address,
        )
        sent_at = self._clock()
        answer = self._call(purchase, data, step, "add_payment", lambda deadline: self.api.add_payment(
            purchase.event_id, cart["id"], payment, request_id=partner_request_id(purchase, "payment"),
            deadline=deadline))
        return self._cart_answer(purchase, data, step, answer, Operation.ADD_PAYMENT, sent_at)

    def _continue_cart_call(self, purchase: Purchase, data: TmData,
                            step: StepContext) -> tuple[Purchase, dict[str, Any] | None]:
        pending = data["pending"]
        operation = Operation(pending["operation"])
        early = self._too_early(pending)
        if early is not None:
            self._park(purchase, data, step, early, f"{operation} answered 202: polling again at {pending['not_before']}")
        sent_at = _parse(pending.get("sent_at")) or self._clock()
        cart = data["cart"]
        purchase, answer = self._poll(purchase, data, step, str(operation), lambda deadline: self.api.poll(
            pending["url"], expect=operation, request_id=partner_request_id(purchase, f"poll-{operation}"),
            deadline=deadline, cart_id=cart["id"] if cart else None))
        data.without("pending")
        return self._cart_answer(purchase, data, step, answer, operation, sent_at)

    def _cart_answer(self, purchase: Purchase, data: TmData, step: StepContext, answer: Any, operation: Operation,
                     sent_at: dt.datetime) -> tuple[Purchase, dict[str, Any]]:
        if isinstance(answer, Polling):
            self._wait_for_poll(purchase, data, step, answer, sent_at)
        assert isinstance(answer, Cart)
        # Each answer's hold_time counts down from that answer (the reference: it "may increase"); the
        # call was sent before TM answered, so counting from the sending is never too late.
        reserved_at = sent_at if operation is Operation.RESERVE else _parse(data["cart"]["reserved_at"])
        assert reserved_at is not None
        if answer.hold_time_seconds is not None:
            hold, expires_at = answer.hold_time_seconds, sent_at + dt.timedelta(seconds=answer.hold_time_seconds)
        else:  # the answer did not say: the last known end stands
            hold = (data["cart"] or {}).get("hold_seconds", 0)
            expires_at = _parse((data["cart"] or {}).get("expires_at")) or reserved_at + dt.timedelta(seconds=hold)
        if operation is Operation.ADD_PAYMENT and data[SEALED_NONCE]:
            data.without(SEALED_NONCE).update({NONCE_USED: True})  # a nonce pays once: discarded
        cart = {"id": answer.cart_id, "reserved_at": _iso(reserved_at), "hold_seconds": hold,
                "expires_at": _iso(expires_at),
                "paid": operation is Operation.ADD_PAYMENT, "grand": str(answer.totals.grand),
                "currency": answer.currency, "seats": answer.num_seats}
        purchase = self._save(purchase, data.set(cart=cart))
        if operation is Operation.RESERVE:
            self._check_cart(purchase, data, step, answer)
        return purchase, cart

    def _check_cart(self, purchase: Purchase, data: TmData, step: StepContext, cart: Cart) -> None:
        """Refuse a cart that does not buy what was asked, costs too much, or is held too briefly."""
        unit = (cart.totals.grand / purchase.quantity).quantize(CENT, ROUND_HALF_UP)
        if cart.num_seats and cart.num_seats != purchase.quantity:
            self._give_up(purchase, data, step, State.FAILED, "cart does not match the request", failure(
                "QUOTE_MISMATCH", f"{cart.num_seats} seats reserved, {purchase.quantity} requested"))
        elsewhere = seats_not_as_asked(cart, purchase.section_name, purchase.row_name)
        if elsewhere:
            # Best available swapped the seats: never paid; deleted, and reserved again (bounded).
            self._abandon_and_retry(purchase, data, step, f"cart {cart.cart_id} holds other seats than asked "
                                    f"({elsewhere}); deleted, reserving again")
        if purchase.max_unit_price is not None and unit > purchase.max_unit_price:
            self._give_up(purchase, data, step, State.FAILED, "all-in price above max_unit_price", failure(
                "PRICE_ABOVE_LIMIT", f"all-in unit price {unit} {cart.currency} (cart total {cart.totals.grand} / "
                f"{purchase.quantity}) is above max_unit_price {purchase.max_unit_price}"))
        if (_parse(data["cart"]["expires_at"]) or self._clock()) - self._clock() < dt.timedelta(
                seconds=self.config.min_hold_seconds + step.settings.quote_safety_margin_seconds):
            self._abandon_and_retry(purchase, data, step, f"cart {cart.cart_id} is held for only "
                                    f"{cart.hold_time_seconds} s; reserving another")

    def _quoted(self, purchase: Purchase, data: TmData, step: StepContext) -> Next | None:
        cart = data["cart"]
        expires_at = _parse(cart["expires_at"])
        assert expires_at is not None
        grand = Decimal(cart["grand"])
        unit = (grand / purchase.quantity).quantize(CENT, ROUND_HALF_UP)
        kept = Row(PartnerQuote.__tablename__, {
            "quote_id": cart["id"], "expires_at": expires_at, "section_name": purchase.section_name or "(any)",
            "row_name": purchase.row_name, "quantity": purchase.quantity, "unit_price": unit, "subtotal": grand,
            "currency": cart["currency"],
        })
        handed_over = step_started()
        try:
            with autocommit() as db:
                quoted = state_machine.transition(
                    db, purchase, State.QUOTED, reason=f"cart {cart['id']} reserved and paid: {grand} {cart['currency']}",
                    message_id=step.message_id, next_action_in=step.settings.redrive_after_seconds,
                    # A cart quoted before (its commit refused unprocessed, kept while held): its row stands.
                    insert_with=None if purchase.quote_id == cart["id"] else kept,
                    hold_claim_for=step.settings.claim_lease_seconds if step.hand_over else None,
                    changes={"quotes_taken": purchase.quotes_taken + 1, "unit_price": unit, "subtotal": grand,
                             "quote_id": cart["id"], "quote_expires_at": expires_at, "last_error": None,
                             "order_evidence": None, "partner_data": data.values},
                )
        except StaleTransition:
            note_late(purchase, f"cart {cart['id']} reserved and paid, not used", step.message_id)
            return None
        return Next(StepName.ORDER, claim=Claim(quoted, handed_over) if step.hand_over else None)

    # ---- order: commit ------------------------------------------------------------------------------

    def order(self, purchase: Purchase, step: StepContext) -> Next | None:
        data = TmData(purchase)
        settings = step.settings
        cart = data["cart"]
        margin = dt.timedelta(seconds=settings.quote_safety_margin_seconds)
        if cart is None or purchase.quote_expires_at is None or purchase.quote_expires_at - margin <= self._clock():
            try:
                self._delete_cart(purchase, data, step)
                with autocommit() as db:
                    state_machine.transition(
                        db, purchase, State.RECEIVED, message_id=step.message_id,
                        reason=f"cart {purchase.quote_id} is held for less than the "
                        f"{settings.quote_safety_margin_seconds:g} s safety margin; reserving again",
                        next_action_in=settings.redrive_after_seconds,
                        changes={"partner_data": data.without("cart", "pending")})
            except StaleTransition:
                note_late(purchase, "cart too close to its hold's end, not re-reserved by this worker", step.message_id)
                return None
            return Next(StepName.QUOTE)
        # The intent: from this commit on, an order may exist for this purchase.
        try:
            with autocommit() as db:
                purchase = state_machine.transition(
                    db, purchase, State.ORDERING, reason=f"committing cart {cart['id']}", message_id=step.message_id,
                    next_action_in=settings.claim_lease_seconds, hold_claim_for=settings.claim_lease_seconds,
                    changes={"order_evidence": OrderEvidence.MAY_EXIST.value,
                             "partner_data": data.set(commit_sent_at=_iso(self._clock()))})
        except StaleTransition:
            return None
        sent_at = self._clock()
        try:
            answer = self.api.commit(purchase.event_id, cart["id"], source_account_id(purchase.id),
                                     request_id=partner_request_id(purchase, "commit"),
                                     deadline=step_deadline(settings, step.started))
        except Exception as error:  # noqa: BLE001  classified below: only a definite refusal proves no order
            return self._commit_failed(purchase, data, step, error)
        return self._commit_answer(purchase, data, step, answer, sent_at)

    def _commit_answer(self, purchase: Purchase, data: TmData, step: StepContext, answer: Committed | Polling,
                       sent_at: dt.datetime) -> Next | None:
        if isinstance(answer, Polling):
            wait = self._remember_poll(data, answer, sent_at, Operation.COMMIT)
            reason = f"commit of cart {purchase.quote_id} answered 202: polling in {wait:g} s"
            log.info("purchase %s: %s (polling URL kept)", purchase.id, reason)

            def write() -> bool:
                if purchase.state == State.ORDERING:
                    return record(purchase, State.ORDER_UNKNOWN, reason, step.message_id, next_action_in=wait,
                                  changes={"partner_data": data.values, "last_error": reason})
                return park(purchase, next_action_in=wait, error=reason, message_id=step.message_id,
                            partner_data=data.values)

            if not keep_answer(write, what=f"the polling URL of the commit of cart {purchase.quote_id}"):
                keep_answer(lambda: keep_late_polling(purchase, data["pending"], wait, step.message_id),
                            what=f"the polling URL of the commit of cart {purchase.quote_id}")
            return None
        return self._ordered(purchase, data, step, answer, how="committed")

    def _commit_failed(self, purchase: Purchase, data: TmData, step: StepContext, error: Exception) -> Next | None:
        """What a commit's failure proves.  Only a definite refusal of the one commit of this cart
        proves that no order was made; everything else is ORDER_UNKNOWN, resolved by asking."""
        settings = step.settings
        definite = isinstance(error, PartnerError) and is_commit_definite(error)
        if not definite:
            log.warning("purchase %s: commit outcome unknown for cart %s: %s", purchase.id, purchase.quote_id, error)
            hint = getattr(error, "order_number", None)
            if hint:
                data.set(order_number_hint=hint)
            changes = {"partner_data": data.without("pending"), "last_error": str(error)[:2000]}
            if purchase.state == State.ORDERING:
                return Next(StepName.RESOLVE) if record(
                    purchase, State.ORDER_UNKNOWN, f"commit outcome unknown: {error}", step.message_id,
                    next_action_in=settings.redrive_after_seconds, changes=changes) else None
            return self._wait(purchase, data, step, f"commit outcome unknown: {error}")
        assert isinstance(error, PartnerError)
        # Nothing was bought by the one commit of this cart.
        if isinstance(error, (RateLimited, Maintenance)):
            wait = self._wait_seconds(error, data)
            margin = dt.timedelta(seconds=settings.quote_safety_margin_seconds)
            if purchase.quote_expires_at is not None and self._clock() + dt.timedelta(seconds=wait) < (
                    purchase.quote_expires_at - margin):
                # Refused unprocessed, and the paid cart outlives the wait: it is kept, and the quote step
                # then finds it paid and hands it to a commit again (no new reserve, no new payment).
                record(
                    purchase, State.RECEIVED, f"commit refused unprocessed ({error.code}); committing cart "
                    f"{purchase.quote_id} again in {wait:g} s (held until {_iso(purchase.quote_expires_at)})",
                    step.message_id, next_action_in=wait,
                    changes={"order_evidence": None, "last_error": str(error)[:2000], "partner_data": data.values})
                return None
            self._delete_cart(purchase, data, step)
            record(purchase, State.RECEIVED, f"commit refused unprocessed ({error.code}); reserving again in "
                   f"{wait:g} s", step.message_id, next_action_in=wait,
                   changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                            "last_error": str(error)})
            return None
        if isinstance(error, CartInvalid):
            record(purchase, State.RECEIVED, f"cart {purchase.quote_id} no longer valid at commit ({error.code}); "
                   "reserving again", step.message_id, next_action_in=settings.redrive_after_seconds,
                   changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                            "last_error": str(error)})
            return Next(StepName.QUOTE)
        self._delete_cart(purchase, data, step)
        if isinstance(error, AccountError):
            record(purchase, State.PAUSED, f"account cannot commit: {error.code}", step.message_id,
                   next_action_in=settings.payment_pause_seconds,
                   changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                            "last_error": str(error)})
        else:
            record(purchase, State.FAILED, f"partner refused the commit: {error.code}", step.message_id,
                   changes={**failure(error.code, error.message), "order_evidence": None,
                            "partner_data": data.without("cart", "pending")})
        return None

    def _commit_refused_late(self, purchase: Purchase, data: TmData, step: StepContext,
                             error: PartnerError) -> Next | None:
        """The one commit of the cart was refused, as its polled answer says: no order was made, so
        the purchase reserves again (and learns there whether the refusal lasts: sold out, payment)."""
        self._delete_cart(purchase, data, step)
        return Next(StepName.QUOTE) if record(
            purchase, State.RECEIVED, f"the commit's polled answer refused it ({error.code}); reserving again",
            step.message_id, next_action_in=step.settings.redrive_after_seconds,
            changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                     "last_error": str(error)[:2000]}) else None

    def _ordered(self, purchase: Purchase, data: TmData, step: StepContext, committed: Committed, *,
                 how: str) -> Next | None:
        order_id = committed.order_number or _token_ref(committed.order_token)
        # Logged before the write (the order number, never the token): a write that never lands still
        # leaves the order findable.
        log.info("purchase %s: order %s %s for cart %s; recording it", purchase.id, order_id, how, purchase.quote_id)
        sealed = (ticket_crypto.encrypt(self.config.ticket_key, committed.order_token)
                  if committed.order_token is not None else None)
        grand = committed.grand_total if committed.grand_total is not None else purchase.subtotal

        def changes_for(current: Purchase) -> dict[str, Any]:
            """The order's columns onto `current`'s own partner_data (a late answer must not undo what
            happened since this step read it)."""
            kept = TmData(current)
            kept.without("pending", "cart")
            if sealed is not None:
                kept.set(order_token=sealed)
            return {"order_id": order_id, "order_status": "committed", "partner_data": kept.values,
                    "last_error": None, "failure_code": None, "failure_message": None, "subtotal": grand,
                    "unit_price": (grand / current.quantity).quantize(CENT, ROUND_HALF_UP) if grand is not None
                    else None}

        def write() -> bool:
            try:
                with autocommit() as db:
                    state_machine.transition(db, purchase, State.AWAITING_TICKETS, reason=f"order {order_id} {how}",
                                             message_id=step.message_id, next_action_in=0.0,
                                             changes=changes_for(purchase))
                return True
            except StaleTransition:
                # Never dropped (invariant 10): applied if the purchase still waits for its order (even
                # held for a person), else an orphan order that keeps the sealed token.
                keep_late_order(purchase, order_id=order_id, quote_id=purchase.quote_id,
                                details={"order_id": order_id, "quote_id": purchase.quote_id, "status": "committed",
                                         **({"order_token_sealed": sealed} if sealed else {})},
                                to_state=State.AWAITING_TICKETS, next_action_in=0.0, changes_for=changes_for,
                                message_id=step.message_id, how=how)
                return False

        return Next(StepName.TICKETS) if keep_answer(write, what=f"order {order_id}") else None

    # ---- resolve: continue the polling, look among unredeemed orders ----------------------------------

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        """A commit whose outcome is unknown.  Its polling URL, if TM gave one, is the only source of
        the order token: it is polled until it gives a definite answer, and forgotten only when TM
        says it is gone (404/410).  A stalled, reset or failed poll proves nothing (assumed.py): the
        URL is kept and polled again with backoff, counted against the cart's window, never against
        a number of polls.  Without a URL the order is looked for among unredeemed orders."""
        data = TmData(purchase)
        deadline = step_deadline(step.settings, step.started)
        pending = data["pending"]
        if pending is not None and pending["operation"] == str(Operation.COMMIT):
            early = self._too_early(pending)
            if early is not None:
                park(purchase, next_action_in=early,
                     error=f"commit answered 202: polling again at {pending['not_before']}",
                     message_id=step.message_id)
                return None
            try:
                answer = self.api.poll(pending["url"], expect=Operation.COMMIT,
                                       request_id=partner_request_id(purchase, "poll-commit"), deadline=deadline,
                                       cart_id=purchase.quote_id)
            except (RateLimited, Maintenance) as error:
                # The poll itself was refused (quota, niterun): nothing is known of the commit yet.
                wait = self._wait_seconds(error, data)
                park(purchase, next_action_in=wait, error=f"polling the commit refused ({error.code}); polling "
                     f"again in {wait:g} s", message_id=step.message_id)
                return None
            except Exception as error:  # noqa: BLE001  classified below: only the poll's own answer proves anything
                if isinstance(error, PartnerError) and is_commit_definite(error) and not isinstance(
                        error, CartInvalid):
                    # The commit's own answer, read by polling: this commit bought nothing.
                    return self._commit_refused_late(purchase, data, step, error)
                if not polling_url_gone(error):
                    # A stall, a timeout, a reset, a 5xx, an unreadable answer: the URL still holds the
                    # answer (reading it again is safe).  Keep it; poll again later.
                    return self._poll_commit_later(purchase, data, step, f"polling the commit failed: {error}")
                log.warning("purchase %s: the commit's polling URL is gone (%s); looking among unredeemed orders",
                            purchase.id, error)
                purchase = self._save(purchase, data.without("pending"))
            else:
                if isinstance(answer, Polling):
                    self._remember_poll(data, answer, _parse(pending.get("sent_at")) or self._clock(), Operation.COMMIT)
                    return self._poll_commit_later(purchase, data, step, "commit still processing (202)",
                                                   wait=answer.wait_seconds)
                return self._commit_answer(purchase, data, step, answer, _parse(pending.get("sent_at")) or self._clock())
        return self._look_up(purchase, data, step, deadline)

    def _poll_commit_later(self, purchase: Purchase, data: TmData, step: StepContext, why: str, *,
                           wait: float | None = None) -> Next | None:
        """The commit's polling URL did not answer definitely: poll it again after `wait` (TM's) or a
        backoff.  Only once the cart's window is long over (TM_COMMIT_POLL_GRACE_SECONDS after its hold
        ended) is the purchase held for a person, the URL still kept for `fulfil retry`."""
        settings = step.settings
        if wait is None:
            wait = resolve_backoff(purchase.attempts, settings)
        window_end = (purchase.quote_expires_at or self._clock()) + dt.timedelta(
            seconds=settings.tm_commit_poll_grace_seconds)
        if self._clock() >= window_end:
            record(purchase, State.NEEDS_ATTENTION, f"the commit's polling URL gave no definite answer by "
                   f"{_iso(window_end)}: {why}", step.message_id,
                   changes={**failure("COMMIT_STILL_PROCESSING", f"Ticketmaster has not said whether the commit of "
                                      f"cart {purchase.quote_id} made an order ({why}); its polling URL is kept: "
                                      "`fulfil retry` polls it again"), "partner_data": data.values})
            return None
        pending = data["pending"] or {}
        data.set(pending={**pending, "not_before": _iso(self._clock() + dt.timedelta(seconds=wait))})
        log.info("purchase %s: %s; polling the commit again in %.1f s", purchase.id, why, wait)
        park(purchase, next_action_in=wait, error=why, message_id=step.message_id, partner_data=data.values)
        return None

    def _look_up(self, purchase: Purchase, data: TmData, step: StepContext, deadline: float) -> Next | None:
        wanted = source_account_id(purchase.id)
        try:
            answer = self.api.unredeemed_orders(self.config.unredeemed_days,
                                                request_id=partner_request_id(purchase, "unredeemed"),
                                                deadline=deadline)
        except PartnerError as error:
            return self._wait(purchase, data, step, f"the unredeemed-orders lookup failed: {error}")
        if isinstance(answer, Polling):
            return self._wait(purchase, data, step, "the unredeemed-orders lookup answered 202")
        found = [order for order in answer if order.order_source_account_id == wanted]
        if not found and absence_policy_applies(purchase, step.settings) and self._list_covers(data):
            # The operator's explicit policy (ORDER_ABSENCE_GRACE_SECONDS, README): the cart's hold ended
            # that long ago (TM cannot commit it any more) and the list still shows no order from it.
            grace = step.settings.order_absence_grace_seconds
            return Next(StepName.QUOTE) if record(
                purchase, State.RECEIVED, message_id=step.message_id,
                reason=f"no unredeemed order from cart {purchase.quote_id}, whose hold ended more than {grace:g} s "
                "ago (ORDER_ABSENCE_GRACE_SECONDS policy); reserving again",
                next_action_in=step.settings.redrive_after_seconds,
                changes={"order_evidence": None, "partner_data": data.without("pending", "cart")}) else None
        if not found:
            return self._wait(purchase, data, step, "no unredeemed order carries its source_account_id (a lookup "
                              "may lag behind a commit: that proves nothing)")
        return self._found_without_token(purchase, data, step, found)

    def _list_covers(self, data: TmData) -> bool:
        """Could the unredeemed-orders list contain this purchase's order?  It lists *unredeemed* orders
        of the last `TM_UNREDEEMED_DAYS` only: so only while the commit is well inside that window and
        before the event starts (nothing can be redeemed earlier).  Otherwise its silence is no
        evidence, and the absence policy never applies."""
        sent, start = _parse(data["commit_sent_at"]), _parse((data["event"] or {}).get("start"))
        now = self._clock()
        if sent is None or start is None or start <= now:
            return False
        return now - sent < dt.timedelta(days=self.config.unredeemed_days) - LIST_WINDOW_MARGIN

    def _found_without_token(self, purchase: Purchase, data: TmData, step: StepContext,
                             found: list[UnredeemedOrder]) -> Next | None:
        numbers = sorted({order.order_number or "(no number)" for order in found})
        reason = (f"Ticketmaster lists {len(found)} order(s) from this purchase ({', '.join(numbers)}) among "
                  "unredeemed orders, but the commit's order token was never received: get the tickets from "
                  "Ticketmaster support, then resolve the purchase")
        changes: dict[str, Any] = failure("ORDER_TOKEN_UNKNOWN", reason)
        if len(found) == 1 and found[0].order_number:
            changes["order_id"] = found[0].order_number
        record(purchase, State.NEEDS_ATTENTION, "order found among unredeemed orders, without its token",
               step.message_id, changes={**changes, "order_evidence": OrderEvidence.EXISTS.value})
        return None

    def _wait(self, purchase: Purchase, data: TmData, step: StepContext, why: str) -> Next | None:
        """Look again later, or hand over to a person once the lookups are used up (the order step's rule)."""
        return wait_or_hold(purchase, step.settings, step.message_id, why, partner_data=data.values)

    # ---- deliver: order management -----------------------------------------------------------------

    def deliver(self, purchase: Purchase, step: StepContext) -> Next | None:
        data = TmData(purchase)
        stored = data["order_token"]
        if not stored:
            record(purchase, State.NEEDS_ATTENTION, "no order token to fetch the tickets with", step.message_id,
                   changes=failure("ORDER_TOKEN_UNKNOWN", f"order {purchase.order_id} exists but its token is "
                                   "unknown: get the tickets from Ticketmaster support"))
            return None
        token = ticket_crypto.decrypt(self.config.ticket_key, stored)
        try:
            pending = data["pending"]
            if pending is not None and pending["operation"] == str(Operation.ORDER_TICKETS):
                purchase, answer = self._poll(purchase, data, step, "order_tickets", lambda deadline: self.api.poll(
                    pending["url"], expect=Operation.ORDER_TICKETS,
                    request_id=partner_request_id(purchase, "poll-tickets"), deadline=deadline), ordered=True)
                data.without("pending")
            else:
                answer = self._call(purchase, data, step, "order_tickets", lambda deadline: self.api.order_tickets(
                    token, self.device_of(data.values), data["third_party_account_id"],
                    request_id=partner_request_id(purchase, "tickets"), deadline=deadline), ordered=True)
            if isinstance(answer, Polling):
                self._wait_for_poll(purchase, data, step, answer, self._clock(), operation=Operation.ORDER_TICKETS)
            assert isinstance(answer, OrderTickets)
            return self._tickets(purchase, data, step, answer)
        except _Stop as stop:
            return stop.following

    def _tickets(self, purchase: Purchase, data: TmData, step: StepContext, answer: OrderTickets) -> Next | None:
        event = data["event"] or {}
        usable = [ticket for ticket in answer.tickets if not ticket.voided]
        retrievable_from = (delay_date_start(answer.delivery_delay_date, event.get("timezone"))
                            if answer.delivery_delay_date else None)
        # SafeTix tickets whose tokens TM does not give yet.  Every documented signal counts: a future
        # delivery delay date, `service_level` SAFETIX, a rotating-symbology entry without a token.
        # Tickets are never issued as final without their tokens.
        safetix = (answer.service_level or "").upper() == assumed.SAFETIX_SERVICE_LEVEL
        date_ahead = retrievable_from is not None and retrievable_from > self._clock()
        tokenless = [ticket for ticket in usable if not ticket.is_safetix and (safetix or date_ahead or (
            ticket.secure_entry is not None and ticket.secure_entry.render_type != assumed.BARCODE_RENDER_TYPE))]
        if tokenless:
            if date_ahead:
                assert retrievable_from is not None
                return self._delayed(purchase, data, step, answer, retrievable_from)
            park(purchase, next_action_in=TOKENS_LATE_RETRY_SECONDS, message_id=step.message_id,
                 error=f"{len(tokenless)} SafeTix ticket(s) without a token yet (delay date "
                 f"{answer.delivery_delay_date or 'not given'}); asking again later", partner_data=data.values)
            return None
        others = sorted({t.order_number for t in usable if t.order_number and t.order_number != purchase.order_id})
        if others and purchase.order_id and not purchase.order_id.startswith(TOKEN_REF_PREFIX):
            record(purchase, State.NEEDS_ATTENTION, "order management answered for another order", step.message_id,
                   changes=failure("ORDER_MISMATCH", f"the order token of order {purchase.order_id} gave the tickets "
                                   f"of order(s) {', '.join(others)}: check the token with Ticketmaster support"))
            return None
        if not usable:
            record(purchase, State.NEEDS_ATTENTION, "order management listed no usable ticket", step.message_id,
                   changes=failure("NO_TICKETS", f"order {purchase.order_id}: {len(answer.tickets)} ticket(s), "
                                   "all voided or none"))
            return None
        start = _parse(event.get("start"))
        key = self.config.ticket_key
        rows = []
        for position, ticket in enumerate(usable):
            secure = ticket.secure_entry
            token = secure.token if secure is not None else None
            rows.append(Ticket(
                purchase_id=purchase.id, position=position, barcode=ticket.barcode, section=ticket.section,
                row=ticket.row, seat=ticket.seat, render_type=secure.render_type if secure else None,
                token_encrypted=ticket_crypto.encrypt(key, token) if token is not None else None,
                voided=False, event_start=start,
                refresh_due_at=(start - REFRESH_BEFORE_START) if (start and token is not None) else None,
            ))
        # The tokens go to the requester in the event, sealed while the event waits in the outbox.
        issued = [ticket_crypto.seal_ticket(key, {
            "barcode": ticket.barcode, "section": ticket.section, "row": ticket.row, "seat": ticket.seat,
            "render_type": ticket.secure_entry.render_type if ticket.secure_entry else None,
        }, ticket.secure_entry.token if ticket.secure_entry else None) for ticket in usable]
        try:
            with session_scope() as session:
                current = session.get_one(Purchase, purchase.id, with_for_update=True)
                if current.claim_token != purchase.claim_token or current.state != State.AWAITING_TICKETS:
                    raise StaleTransition(purchase.id, State.AWAITING_TICKETS)
                session.add_all(rows)
                state_machine.transition(
                    session, current, State.TICKETS_ISSUED, message_id=step.message_id,
                    reason=f"{len(rows)} ticket(s) issued for order {purchase.order_id}" + (
                        "" if start is not None else "; the event's start is unknown (no event_start in the request, "
                        "event details unavailable): no SafeTix refresh is scheduled, refresh on demand"),
                    changes={"order_status": "tickets_issued", "partner_data": data.without("pending"),
                             "last_error": None},
                    event_extra={"tickets": issued, "delivery": {
                        "service_level": answer.service_level, "delivery_delay_date":
                        answer.delivery_delay_date.isoformat() if answer.delivery_delay_date else None}},
                )
        except StaleTransition:
            note_late(purchase, f"{len(rows)} ticket(s) fetched, not recorded by this worker", step.message_id)
        return None

    def _delayed(self, purchase: Purchase, data: TmData, step: StepContext, answer: OrderTickets,
                 retrievable_from: dt.datetime) -> Next | None:
        assert answer.delivery_delay_date is not None
        day = answer.delivery_delay_date.isoformat()
        wait = max((retrievable_from - self._clock()).total_seconds(), 1.0)
        if data["delay_notified"] != day:
            with session_scope() as session:
                current = session.get_one(Purchase, purchase.id, with_for_update=True)
                if current.claim_token == purchase.claim_token:
                    state_machine.note(
                        session, current, kind="tickets_delayed", event_type="purchase.tickets_delayed",
                        reason=f"Ticketmaster delivers the tickets of order {purchase.order_id} from {day} "
                        "(event-local date)", message_id=step.message_id,
                        extra={"tickets_delay": {"delivery_delay_date": day,
                                                 "retrievable_from": _iso(retrievable_from)}})
            data.set(delay_notified=day, delay_date=day)
        park(purchase, next_action_in=wait, error=None, message_id=step.message_id, partner_data=data.values)
        return None

    # ---- SafeTix refresh (steps/refresh.py) ---------------------------------------------------------

    def refresh(self, purchase: Purchase, tickets: Sequence[Ticket], *, key: SecretStr,
                deadline: float, device: dict[str, Any] | None = None) -> list[Refreshed]:
        """New tokens for the tickets from securerender, `x-user-id` = the buyer's
        third_party_account_id (the one sent with the payment), with the fan's device (`device`, given
        on demand, else the request's).  A ticket without a barcode (seed 003's example has
        `barcode_id: ""`) is refreshed through order management instead, matched by its seat.
        Tokens are matched to tickets by barcode; by position only for a single ticket.  Transient
        failures raise."""
        data = TmData(purchase)
        user = data["third_party_account_id"]
        fan = self.device_of(data.values, device)
        wanted: list[tuple[Ticket, RenderTicket]] = []
        results: list[Refreshed] = []
        barcodeless = [ticket for ticket in tickets if not ticket.barcode]
        if barcodeless:
            results += self._refresh_by_order(purchase, data, barcodeless, fan, deadline)
        for ticket in tickets:
            if not ticket.barcode:
                continue
            if not (ticket.section and ticket.row and ticket.seat):
                results.append(Refreshed(ticket.id, None, "ticket lacks section, row or seat"))
                continue
            wanted.append((ticket, RenderTicket(event_id=purchase.event_id, section=ticket.section, row=ticket.row,
                                                seat=ticket.seat, barcode=ticket.barcode)))
        if not wanted:
            return results
        answer = self.api.secure_render(user, fan, [render for _, render in wanted],
                                        request_id=partner_request_id(purchase, "securerender"), deadline=deadline)
        by_barcode = {rendered.barcode: rendered for rendered in answer.tickets if rendered.barcode}
        for ticket, render in wanted:
            rendered = by_barcode.get(render.barcode) or (
                answer.tickets[0] if len(wanted) == 1 and len(answer.tickets) == 1 else None)
            if rendered is None:
                results.append(Refreshed(ticket.id, None, "securerender did not answer for this ticket"))
            elif rendered.error is not None or rendered.token is None:
                error = rendered.error
                results.append(Refreshed(ticket.id, None, f"{error.code}: {error.message}" if error else "no token"))
            else:
                results.append(Refreshed(ticket.id, rendered.token.get_secret_value()))
        return results

    def _refresh_by_order(self, purchase: Purchase, data: TmData, tickets: Sequence[Ticket], fan: Device,
                          deadline: float) -> list[Refreshed]:
        """Fresh tokens from order management for tickets securerender cannot name (no barcode)."""
        stored = data["order_token"]
        if not stored:
            return [Refreshed(ticket.id, None, "no barcode, and no order token to ask order management with")
                    for ticket in tickets]
        answer = self.api.order_tickets(ticket_crypto.decrypt(self.config.ticket_key, stored), fan,
                                        data["third_party_account_id"],
                                        request_id=partner_request_id(purchase, "refresh-tickets"), deadline=deadline)
        if isinstance(answer, Polling):
            raise TransientError("POLLING", "order management answered 202: refreshed on the next run")
        usable = [found for found in answer.tickets if not found.voided and found.is_safetix]
        results = []
        for ticket in tickets:
            same_seat = [found for found in usable if (found.section, found.row, found.seat) == (
                ticket.section, ticket.row, ticket.seat) and ticket.seat is not None]
            if len(same_seat) != 1 and len(tickets) == 1 and len(usable) == 1:
                same_seat = usable
            if len(same_seat) != 1 or same_seat[0].secure_entry is None or same_seat[0].secure_entry.token is None:
                results.append(Refreshed(ticket.id, None, "order management gave no token for this seat"))
            else:
                results.append(Refreshed(ticket.id, same_seat[0].secure_entry.token.get_secret_value()))
        return results

    # ---- release: a purchase that ended before its order --------------------------------------------

    def release(self, purchase: Purchase, settings: Settings) -> None:
        """Delete the carts of a purchase that ended before any commit (deadline, re-quote limit, an
        operator's cancel): never left to lapse while they hold seats.  Best effort: never raises."""
        data = TmData(purchase)
        carts = [*([data["cart"]["id"]] if data["cart"] else []), *(data["abandoned"] or [])]
        deadline = time.monotonic() + settings.step_deadline_seconds
        for cart_id in dict.fromkeys(carts):
            try:
                self.api.delete_cart(purchase.event_id, cart_id, request_id=partner_request_id(
                    purchase, f"release-{cart_id}"), deadline=deadline)
                log.info("purchase %s ended: cart %s deleted", purchase.id, cart_id)
            except (CartInvalid, TmNotFound):
                pass  # gone already
            except Exception as error:  # noqa: BLE001  best effort: TM releases it at its hold's end
                log.warning("purchase %s ended: cart %s not deleted (%s); TM releases it at its hold's end",
                            purchase.id, cart_id, error)

    # ---- shared -------------------------------------------------------------------------------

    def _call(self, purchase: Purchase, data: TmData, step: StepContext, what: str,
              call: Callable[[float], Any], *, ordered: bool = False) -> Any:
        """Run one partner call; what its failure means for the purchase.  Before any commit a refusal
        fails (or pauses) it; once `ordered` (the order exists) it holds it for a person instead."""
        try:
            return call(step_deadline(step.settings, step.started))
        except (RateLimited, Maintenance) as error:
            self._park(purchase, data, step, self._wait_seconds(error, data), f"{what}: {error}")
        except TmOutcomeUnknown as error:
            # A reserve or payment that may have been processed: no money moves before a commit.
            if error.cart_id or data["cart"]:
                self._abandon_and_retry(purchase, data, step, f"{what} outcome unknown: {error}",
                                        cart_id=error.cart_id)
            raise release_and_retry(purchase, error, step.settings) from error
        except TmNotFound as error:
            if ordered:
                self._hold(purchase, data, step, what, error)
            self._give_up(purchase, data, step, State.FAILED, f"{what}: not found ({error.code})",
                          failure("EVENT_NOT_FOUND" if what == "event" else error.code, error.message))
        except AccountError as error:
            if ordered:
                self._hold(purchase, data, step, what, error)
            self._give_up(purchase, data, step, State.PAUSED, f"account cannot {what}: {error.code}",
                          {"last_error": str(error)[:2000]})
        except PermanentError as error:
            if ordered:
                self._hold(purchase, data, step, what, error)
            if isinstance(error, CartInvalid) and data["cart"] is not None and what != "reserve":
                # The cart expired or is gone: reserve another.
                data.without("cart", "pending")
                self._park(purchase, data, step, 0.5, f"{what}: cart no longer valid ({error.code}); reserving again")
            if what == "add_payment" and names_payment_field(error):
                # The operator's payment setup (a field TM refuses, a missing cin): the same for every
                # purchase, so each one pauses with the reason; none is failed for it.
                self._give_up(purchase, data, step, State.PAUSED, f"payment setup refused: {error.code}",
                              {"last_error": f"PAYMENT_SETUP: {error}"[:2000]})
            self._give_up(purchase, data, step, State.FAILED, f"partner refused {what}: {error.code}",
                          failure(error.code, error.message))
        except PartnerError as error:
            raise release_and_retry(purchase, error, step.settings) from error
        raise AssertionError("unreachable")

    def _poll(self, purchase: Purchase, data: TmData, step: StepContext, what: str, poll: Callable[[float], Any],
              *, ordered: bool = False) -> tuple[Purchase, Any]:
        """Continue the stored polling URL (`data["pending"]`).  If the poll itself was refused or never
        sent (quota, niterun, connect error, no time left), the URL is kept for the next claim.  Any
        other failure (the URL gone, an unreadable answer) means it will not tell us any more: it is
        forgotten, in Postgres first, and the failure is then handled like the call's own (so a
        forgotten URL is never polled again and again)."""
        try:
            return purchase, poll(step_deadline(step.settings, step.started))
        except (RateLimited, Maintenance, NotSent, DeadlineReached) as error:
            failed: PartnerError = error
        except PartnerError as error:
            failed = error
            purchase = self._save(purchase, data.without("pending"))

        def fail(deadline: float) -> Any:
            raise failed

        return purchase, self._call(purchase, data, step, what, fail, ordered=ordered)

    def _hold(self, purchase: Purchase, data: TmData, step: StepContext, what: str, error: PartnerError) -> None:
        """The order exists: a refusal now is for a person to look at, never a failure of the purchase."""
        record(purchase, State.NEEDS_ATTENTION, f"{what} refused for order {purchase.order_id}: {error.code}",
               step.message_id, changes={**failure(error.code, error.message), "partner_data": data.values})
        raise _Stop()

    def _wait_seconds(self, error: PartnerError, data: TmData) -> float:
        """How long a quota or a 20001 lasts: until Ratelimit-Expiry; inside the event-local 00:00-02:00
        window until 02:00 (niterun); outside it (or where the zone is unknown) 20001 means the system
        is unavailable: minutes (TM_UNAVAILABLE_RETRY_SECONDS), never until the next night."""
        now = self._clock()
        if isinstance(error, RateLimited):
            if error.retry_at is not None:
                return max((error.retry_at - now).total_seconds(), 1.0)
            return QUOTA_FALLBACK_SECONDS
        end = niterun_end(now, (data["event"] or {}).get("timezone"))
        if end is not None and end - now <= dt.timedelta(hours=NITERUN_END_HOUR):
            return max((end - now).total_seconds(), 1.0)
        return self.config.unavailable_retry_seconds

    def _wait_for_poll(self, purchase: Purchase, data: TmData, step: StepContext, answer: Polling,
                       sent_at: dt.datetime, *, operation: Operation | None = None) -> None:
        wait = self._remember_poll(data, answer, sent_at, operation or answer.operation)
        self._park(purchase, data, step, wait, f"{answer.operation} answered 202: polling in {wait:g} s")

    def _remember_poll(self, data: TmData, answer: Polling, sent_at: dt.datetime, operation: Operation) -> float:
        """Keep a 202's polling URL (without the apikey) for whoever claims the purchase next; returns its wait."""
        wait = answer.wait_seconds
        data.set(pending={"operation": str(operation), "url": answer.url, "sent_at": _iso(sent_at),
                          "not_before": _iso(self._clock() + dt.timedelta(seconds=wait))})
        return wait

    def _too_early(self, pending: dict[str, Any]) -> float | None:
        """Seconds left before a stored polling URL may be polled (its `wait`), None once it may."""
        not_before = _parse(pending["not_before"])
        left = (not_before - self._clock()).total_seconds() if not_before is not None else 0.0
        return left if left > 0 else None

    def _park(self, purchase: Purchase, data: TmData, step: StepContext, seconds: float, why: str) -> None:
        log.info("purchase %s waits %.1f s: %s", purchase.id, seconds, why)
        park(purchase, next_action_in=max(seconds, 0.001), error=why, message_id=step.message_id,
             partner_data=data.values)
        raise _Stop()

    def _save(self, purchase: Purchase, values: dict[str, Any]) -> Purchase:
        try:
            with autocommit() as db:
                return state_machine.save(db, purchase, partner_data=values)
        except StaleTransition:
            note_late(purchase, "progress with Ticketmaster not saved by this worker", None)
            raise _Stop() from None

    def _give_up(self, purchase: Purchase, data: TmData, step: StepContext, to_state: State, reason: str,
                 changes: dict[str, Any]) -> None:
        self._delete_cart(purchase, data, step)
        extra = {"next_action_in": step.settings.payment_pause_seconds} if to_state is State.PAUSED else {}
        record(purchase, to_state, reason, step.message_id,
               changes={**changes, "partner_data": data.without("cart", "pending")}, **extra)
        raise _Stop()

    def _abandon_and_retry(self, purchase: Purchase, data: TmData, step: StepContext, why: str, *,
                           cart_id: str | None = None) -> None:
        if cart_id and cart_id != (data["cart"] or {}).get("id"):
            data.set(abandoned=[*(data["abandoned"] or []), cart_id])
        self._delete_cart(purchase, data, step)
        data.without("cart", "pending")
        purchase_after = purchase
        if purchase.quotes_taken + 1 > step.settings.max_requotes + 1:
            self._give_up(purchase_after, data, step, State.FAILED, "re-reserve limit reached",
                          failure("REQUOTE_LIMIT", f"{purchase.quotes_taken + 1} carts taken, none could be ordered: "
                                  f"{why}"))
        park(purchase_after, next_action_in=0.5, error=why, message_id=step.message_id, partner_data=data.values,
             quotes_taken=purchase.quotes_taken + 1)
        raise _Stop(Next(StepName.QUOTE, delay_seconds=0.5))

    def _delete_cart(self, purchase: Purchase, data: TmData, step: StepContext) -> None:
        """Delete the purchase's cart (best effort, within the step's deadline); one not deleted is
        kept in `abandoned` for the next step.  Never called once a commit of it may be in flight."""
        cart = data["cart"]
        if cart is not None:
            data.set(abandoned=[*(data["abandoned"] or []), cart["id"]])
            data.without("cart")
        self._delete_listed(purchase, data, step)

    def _delete_abandoned(self, purchase: Purchase, data: TmData, step: StepContext) -> Purchase:
        if not data["abandoned"]:
            return purchase
        self._delete_listed(purchase, data, step)
        return self._save(purchase, data.values)

    def _delete_listed(self, purchase: Purchase, data: TmData, step: StepContext) -> None:
        left = []
        for cart_id in data["abandoned"] or []:
            try:
                answer = self.api.delete_cart(purchase.event_id, cart_id,
                                              request_id=partner_request_id(purchase, f"delete-{cart_id}"),
                                              deadline=step_deadline(step.settings, step.started))
                if isinstance(answer, Polling):
                    left.append(cart_id)  # deleting again later is harmless
            except (CartInvalid, TmNotFound):
                pass  # gone already
            except PartnerError as error:
                log.warning("purchase %s: cart %s not deleted yet (%s); trying again later", purchase.id, cart_id,
                            error)
                left.append(cart_id)
        data.set(abandoned=left) if left else data.without("abandoned")


_PAYMENT_FIELD_WORDS = ("payment", "card", "cin", "nonce")


def names_payment_field(error: PartnerError) -> bool:
    """A refusal of add-payment that names a payment field (the operator's setup, not the cart)."""
    return not isinstance(error, CartInvalid) and any(word in error.message.lower() for word in _PAYMENT_FIELD_WORDS)


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().casefold() == (b or "").strip().casefold()


def seats_not_as_asked(cart: Cart, section: str | None, row: str | None) -> str:
    """What in the cart's ticket items is not the section/row the request named ("" when all is)."""
    if section is None:
        return ""
    wrong = [f"section {item.section or '?'} row {item.row or '?'}" for item in cart.items
             if item.type in (None, "ticket") and (item.section is not None or item.row is not None)
             and (not _same(item.section, section) or (row is not None and not _same(item.row, row)))]
    return ", ".join(wrong)


TOKEN_REF_PREFIX = "tm-token-"


def _token_ref(token: SecretStr | None) -> str:
    """An order id for a commit that gave a token but no order number: a hash, never the token."""
    digest = hashlib.sha256(token.get_secret_value().encode()).hexdigest()[:24] if token else "unknown"
    return f"{TOKEN_REF_PREFIX}{digest}"


def keep_late_polling(purchase: Purchase, pending: dict[str, Any], wait: float, message_id: str | None) -> None:
    """A commit's 202 that came after the claim had passed on: its polling URL (the only way to the
    order token) is never dropped.  It goes into the history in every case (the URL holds no
    secret), and back into partner_data if the purchase still waits for this cart's order; one held
    for a person or stalled is resolved again, so the URL is polled."""
    with session_scope() as session:
        current = session.get_one(Purchase, purchase.id, with_for_update=True)
        state = State(current.state)
        state_machine.late_answer(session, current.id, step="order", message_id=message_id,
                                  answer=f"commit of cart {purchase.quote_id} answered 202 late: polling URL "
                                  f"{pending['url']}")
        if state not in STILL_RESOLVING or current.order_id is not None or current.quote_id != purchase.quote_id:
            return
        kept = TmData(current)
        if kept["pending"] is None:
            kept.set(pending=pending)
        if state in (State.NEEDS_ATTENTION, State.STALLED):
            state_machine.transition(session, current, State.ORDER_UNKNOWN, message_id=message_id,
                                     reason=f"the commit of cart {purchase.quote_id} answered 202 late: polling it",
                                     next_action_in=wait, changes={"partner_data": kept.values,
                                                                   "failure_code": None, "failure_message": None})
        else:
            current.partner_data = kept.values


def build(settings: Settings, observe: Callable[[str, str, float], None] | None = None) -> TicketmasterFlow:
    assert settings.tm_base_url is not None and settings.tm_apikey is not None
    api = TicketmasterApi(
        str(settings.tm_base_url), settings.tm_apikey.get_secret_value(),
        securerender_url=str(settings.tm_secure_render_url) if settings.tm_secure_render_url else None,
        connect_timeout=settings.tm_connect_timeout, read_timeout=settings.tm_read_timeout, observe=observe,
    )
    return TicketmasterFlow(api, TmConfig.from_settings(settings))
