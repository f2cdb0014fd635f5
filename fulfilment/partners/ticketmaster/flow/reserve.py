"""Quote: the event's start and zone, reserve, price and seat checks, payment -> QUOTED."""

from __future__ import annotations

import datetime as dt
import logging
import time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import SecretStr

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import (
    Claim,
    Next,
    failure,
    note_late,
    partner_request_id,
    step_deadline,
    step_started,
)
from fulfilment.flowkit.flow import StepContext
from fulfilment.partners.base import PartnerError
from fulfilment.partners.ticketmaster.flow import data as tm_data
from fulfilment.partners.ticketmaster.flow.base import FlowBase
from fulfilment.partners.ticketmaster.payloads import (
    Card,
    Cart,
    EventDetails,
    Operation,
    Payment,
    Polling,
    ReserveRequest,
    ReserveTicket,
)
from fulfilment.partners.ticketmaster.payment import (
    NONCE_USED,
    SEALED_NONCE,
    PaymentSetupError,
    request_nonce,
)
from fulfilment.state_machine import StaleTransition, State
from fulfilment.statements import Row
from fulfilment.step_names import StepName
from models import PartnerQuote, Purchase

log = logging.getLogger(__name__)


class Reserve(FlowBase):
    """RECEIVED or PAUSED: the event learnt, a cart reserved and paid for, checked, kept as the quote."""

    # ---- quote: reserve + payment ---------------------------------------------------------------

    def quote(self, purchase: Purchase, step: StepContext) -> Next | None:
        data = tm_data.TmData(purchase)
        try:
            purchase = self._delete_abandoned(purchase, data, step)
            if data["event"] is None:
                purchase = self._learn_event(purchase, data, step)
            cart = data["cart"]
            if cart is not None and data["pending"] is None and tm_data._at(cart["expires_at"]) <= self._clock():
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
        except tm_data._Stop as stop:
            return stop.following

    def _learn_event(self, purchase: Purchase, data: tm_data.TmData, step: StepContext) -> Purchase:
        """The event's start and time zone: from the request when it gave both (no call: Retrieve
        Event Details is deprecated at TM), else from event details as a fallback.  That call never
        fails a purchase that could otherwise be bought: a 404, a 403, a quota or an unreadable
        answer leaves what the request gave, and what needs the rest says so (README)."""
        given_start, given_zone = tm_data._parse(data["event_start"]), data["event_timezone"]
        if given_start is not None and given_zone:
            return self._save(purchase, data.set(event={"start": tm_data._iso(given_start), "timezone": given_zone,
                                                        "source": "request"}))
        try:
            details = self._event_details(purchase.event_id, partner_request_id(purchase, "event"),
                                          step_deadline(step.settings, step.started))
        except PartnerError as error:
            log.warning("purchase %s: event details for %s unavailable (%s); going on with what the request gave "
                        "(start %s, time zone %s)", purchase.id, purchase.event_id, error.code,
                        "given" if given_start else "unknown", given_zone or "unknown")
            return self._save(purchase, data.set(event={
                "start": tm_data._iso(given_start) if given_start else None, "timezone": given_zone,
                "source": f"request (event details: {error.code})"}))
        start = given_start or details.start_utc
        return self._save(purchase, data.set(event={"start": tm_data._iso(start) if start else None,
                                                     "timezone": given_zone or details.timezone,
                                                     "source": "event details"}))

    def _event_details(self, event_id: str, request_id: str, deadline: float) -> EventDetails:
        now = time.monotonic()
        with self._events_lock:
            cached = self._events.get(event_id)
        if cached is not None and now - cached[0] < tm_data.EVENT_CACHE_SECONDS:
            return cached[1]
        details = self.api.event_details(event_id, request_id=request_id, deadline=deadline)
        with self._events_lock:
            self._events[event_id] = (now, details)
        return details

    def _reserve(self, purchase: Purchase, data: tm_data.TmData, step: StepContext) -> tuple[Purchase, dict[str, Any]]:
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

    def _nonce(self, purchase: Purchase, data: tm_data.TmData, step: StepContext) -> SecretStr:
        """This payment's nonce: the request's own (sealed), else one from the configured source.
        A source that cannot give one pauses the purchase with the reason (its cart deleted)."""
        try:
            return request_nonce(self.config.ticket_key, data.values) or self.config.nonces.nonce_for(data.values)
        except PaymentSetupError as error:
            self._give_up(purchase, data, step, State.PAUSED, f"payment setup: {error.code}",
                          {"last_error": str(error)[:2000]})
            raise AssertionError("unreachable") from None

    def _pay(self, purchase: Purchase, data: tm_data.TmData, step: StepContext) -> tuple[Purchase, dict[str, Any]]:
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

    def _continue_cart_call(self, purchase: Purchase, data: tm_data.TmData,
                            step: StepContext) -> tuple[Purchase, dict[str, Any] | None]:
        pending = data["pending"]
        operation = Operation(pending["operation"])
        early = self._too_early(pending)
        if early is not None:
            self._park(purchase, data, step, early, f"{operation} answered 202: polling again at {pending['not_before']}")
        sent_at = tm_data._parse(pending.get("sent_at")) or self._clock()
        cart = data["cart"]
        purchase, answer = self._poll(purchase, data, step, str(operation), lambda deadline: self.api.poll(
            pending["url"], expect=operation, request_id=partner_request_id(purchase, f"poll-{operation}"),
            deadline=deadline, cart_id=cart["id"] if cart else None))
        data.without("pending")
        return self._cart_answer(purchase, data, step, answer, operation, sent_at)

    def _cart_answer(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, answer: Any, operation: Operation,
                     sent_at: dt.datetime) -> tuple[Purchase, dict[str, Any]]:
        if isinstance(answer, Polling):
            self._wait_for_poll(purchase, data, step, answer, sent_at)
        assert isinstance(answer, Cart)
        # Each answer's hold_time counts down from that answer (the reference: it "may increase"); the
        # call was sent before TM answered, so counting from the sending is never too late.
        reserved_at = sent_at if operation is Operation.RESERVE else tm_data._parse(data["cart"]["reserved_at"])
        assert reserved_at is not None
        if answer.hold_time_seconds is not None:
            hold, expires_at = answer.hold_time_seconds, sent_at + dt.timedelta(seconds=answer.hold_time_seconds)
        else:  # the answer did not say: the last known end stands
            hold = (data["cart"] or {}).get("hold_seconds", 0)
            expires_at = tm_data._parse((data["cart"] or {}).get("expires_at")) or reserved_at + dt.timedelta(seconds=hold)
        if operation is Operation.ADD_PAYMENT and data[SEALED_NONCE]:
            data.without(SEALED_NONCE).update({NONCE_USED: True})  # a nonce pays once: discarded
        cart = {"id": answer.cart_id, "reserved_at": tm_data._iso(reserved_at), "hold_seconds": hold,
                "expires_at": tm_data._iso(expires_at),
                "paid": operation is Operation.ADD_PAYMENT, "grand": str(answer.totals.grand),
                "currency": answer.currency, "seats": answer.num_seats}
        purchase = self._save(purchase, data.set(cart=cart))
        if operation is Operation.RESERVE:
            self._check_cart(purchase, data, step, answer)
        return purchase, cart

    def _check_cart(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, cart: Cart) -> None:
        """Refuse a cart that does not buy what was asked, costs too much, or is held too briefly."""
        unit = (cart.totals.grand / purchase.quantity).quantize(tm_data.CENT, ROUND_HALF_UP)
        if cart.num_seats and cart.num_seats != purchase.quantity:
            self._give_up(purchase, data, step, State.FAILED, "cart does not match the request", failure(
                "QUOTE_MISMATCH", f"{cart.num_seats} seats reserved, {purchase.quantity} requested"))
        elsewhere = tm_data.seats_not_as_asked(cart, purchase.section_name, purchase.row_name)
        if elsewhere:
            # Best available swapped the seats: never paid; deleted, and reserved again (bounded).
            self._abandon_and_retry(purchase, data, step, f"cart {cart.cart_id} holds other seats than asked "
                                    f"({elsewhere}); deleted, reserving again")
        if purchase.max_unit_price is not None and unit > purchase.max_unit_price:
            self._give_up(purchase, data, step, State.FAILED, "all-in price above max_unit_price", failure(
                "PRICE_ABOVE_LIMIT", f"all-in unit price {unit} {cart.currency} (cart total {cart.totals.grand} / "
                f"{purchase.quantity}) is above max_unit_price {purchase.max_unit_price}"))
        if (tm_data._parse(data["cart"]["expires_at"]) or self._clock()) - self._clock() < dt.timedelta(
                seconds=self.config.min_hold_seconds + step.settings.quote_safety_margin_seconds):
            self._abandon_and_retry(purchase, data, step, f"cart {cart.cart_id} is held for only "
                                    f"{cart.hold_time_seconds} s; reserving another")

    def _quoted(self, purchase: Purchase, data: tm_data.TmData, step: StepContext) -> Next | None:
        cart = data["cart"]
        expires_at = tm_data._parse(cart["expires_at"])
        assert expires_at is not None
        grand = Decimal(cart["grand"])
        unit = (grand / purchase.quantity).quantize(tm_data.CENT, ROUND_HALF_UP)
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
