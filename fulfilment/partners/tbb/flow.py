"""TBB's flow: quote -> order -> transfer, the partner part of each step (flowkit/flow.py `PartnerFlow`).

    quote    RECEIVED/PAUSED: POST /v1/quotes -> QUOTED (quote_id, expires_at, unit_price), or FAILED
             (refused, above max_unit_price, other seats than asked), PAUSED (the account)
    order    QUOTED: the quote checked against the safety margin (else re-quoted) -> the intent
             (ORDERING, order evidence may_exist) -> POST /v1/orders -> AWAITING_TRANSFER
    resolve  ORDER_UNKNOWN: the order looked up by quote, the same quote sent again while usable
    deliver  AWAITING_TRANSFER: the order's status -> TRANSFER_COMPLETE | TRANSFER_EXPIRED | CANCELLED,
             polled from Postgres (`next_action_at`), more often as the delivery deadline nears

Invariant 1 (at most one partner order per purchase) rests on the rules kept here:
- the intent (ORDERING, order evidence `may_exist`) is committed *before* the order
  request is sent;
- only a definite answer to the one request a worker sent under its own claim may lead
  away from the order path (QUOTE_EXPIRED → re-quote, a permanent refusal → FAILED, an
  account problem → PAUSED); anything else (timeout, reset, 5xx) is ORDER_UNKNOWN;
- once an order may exist, **absence is concluded only from proof**, and the partner
  gives none: a lookup may lag behind an order (or be paginated, or unreadable), a
  retry's QUOTE_EXPIRED may be checked before consumption, and a quote expiring on our
  clock says nothing of a request still in flight.  So an unknown outcome is resolved by
  looking the order up, and while the quote is still valid by sending the *same*
  single-use quote again (201: ours; QUOTE_ALREADY_CONSUMED: an order exists, recorded as
  evidence `exists`), with the waits parked in Postgres (exponential backoff).  If that
  never finds it, the purchase stops in NEEDS_ATTENTION with the evidence recorded.  The
  only way back to quoting is the operator's explicit policy ORDER_ABSENCE_GRACE_SECONDS:
  a complete, empty lookup that long after the quote expired, and never after the
  partner said the quote was consumed.
- fencing (invariant 8): every outcome is recorded only while the claim is still this
  worker's; a confirmation that comes too late is applied if the purchase still waits for
  exactly that answer, and otherwise kept as an orphan order for operators, never dropped.
- no order (and no re-sent order) once the delivery deadline is closer than
  MIN_DELIVERY_LEAD_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from fulfilment import metrics, state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.errors import AccountError, NotFound, PartnerError, PermanentError, QuoteAlreadyConsumed, QuoteExpired
from fulfilment.flowkit.fencing import (
    Claim,
    Next,
    failure,
    keep_answer,
    note_late,
    partner_request_id,
    record,
    release_and_retry,
    step_deadline,
    step_started,
    too_close_to_deadline,
)
from fulfilment.flowkit.flow import StepContext
from fulfilment.flowkit.orders import absence_policy_applies, keep_late_order, wait_or_hold
from fulfilment.partners.base import (
    ORDER_FINAL_STATUSES,
    LookupUnknown,
    Order,
    OrderAbsent,
    OrderFound,
    OrderLookup,
    Partner,
    Quote,
    QuoteRequest,
    order_details,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import OrderEvidence, StaleTransition, State
from fulfilment.statements import Row
from fulfilment.step_names import StepName
from models import PartnerQuote, Purchase

log = logging.getLogger(__name__)

NAME = "tbb"


class TbbFlow:
    """A quote/order client (`partners.base.Partner`: the TBB client, or a fake in tests) as a flow."""

    name = NAME
    ordered_state = State.AWAITING_TRANSFER
    limits_resolve_attempts = True

    def __init__(self, client: Partner) -> None:
        self.client = client

    def quote(self, purchase: Purchase, step: StepContext) -> Next | None:
        return take_quote(purchase, self.client, step)

    def order(self, purchase: Purchase, step: StepContext) -> Next | None:
        return place_order(purchase, self.client, step)

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        return resolve_order(purchase, self.client, step)

    def deliver(self, purchase: Purchase, step: StepContext) -> Next | None:
        return check_transfer(purchase, self.client, step)

    def release(self, purchase: Purchase, settings: Settings) -> None:
        """Nothing is held at TBB before an order (a quote lapses by itself)."""

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


# ---- quote ----------------------------------------------------------------------------------------


def take_quote(purchase: Purchase, client: Partner, step: StepContext) -> Next | None:
    """RECEIVED or PAUSED, claimed -> QUOTED.  `step.hand_over`: the caller runs the order step at once
    (runner.deliver): QUOTED keeps the lease and the returned `Next` carries the claimed purchase."""
    settings, message_id, started, hand_over = step.settings, step.message_id, step.started, step.hand_over
    assert purchase.section_name is not None  # a quote/order partner's request names it
    request = QuoteRequest(purchase.event_id, purchase.section_name, purchase.row_name, purchase.quantity)
    try:
        quote = client.create_quote(request, request_id=partner_request_id(purchase, "quote"),
                                     deadline=step_deadline(settings, started))
    except AccountError as error:
        # The account, not the request, is at fault: wait without burning the purchase.
        record(purchase, State.PAUSED, f"account cannot quote: {error.code}", message_id,
                next_action_in=settings.payment_pause_seconds, changes={"last_error": str(error)})
        return None
    except PermanentError as error:
        record(purchase, State.FAILED, f"partner refused the quote: {error.code}", message_id,
                changes=failure(error.code, error.message))
        return None
    except PartnerError as error:  # transient, or a surprise: try again later
        raise release_and_retry(purchase, error, settings) from error

    try:
        return _record_quote(purchase, quote, settings=settings, message_id=message_id, hand_over=hand_over)
    except StaleTransition:
        note_late(purchase, f"quote {quote.quote_id} at {quote.unit_price} {quote.currency}, not used", message_id)
        return None


def _record_quote(purchase: Purchase, quote: Quote, *, settings: Settings, message_id: str | None,
                  hand_over: bool) -> Next | None:
    """Keep the quote and move on, in one statement fenced by the claim."""
    mismatch = _mismatch(purchase, quote)
    kept = Row(PartnerQuote.__tablename__, {
        "quote_id": quote.quote_id, "expires_at": quote.expires_at, "section_name": quote.section_name,
        "row_name": quote.row_name, "quantity": quote.quantity, "unit_price": quote.unit_price,
        "subtotal": quote.subtotal, "currency": quote.currency,
    })
    with autocommit() as db:
        taken = {"quotes_taken": purchase.quotes_taken + 1, "unit_price": quote.unit_price, "subtotal": quote.subtotal}
        if mismatch:
            state_machine.transition(db, purchase, State.FAILED, reason="quote does not match the request",
                                     message_id=message_id, changes={**taken, **failure("QUOTE_MISMATCH", mismatch)},
                                     insert_with=kept)
            return None
        if purchase.max_unit_price is not None and quote.unit_price > purchase.max_unit_price:
            state_machine.transition(
                db, purchase, State.FAILED, reason="quoted price above max_unit_price", message_id=message_id,
                insert_with=kept,
                changes={**taken, **failure(
                    "PRICE_ABOVE_LIMIT",
                    f"quoted unit price {quote.unit_price} {quote.currency} is above max_unit_price "
                    f"{purchase.max_unit_price}",
                )},
            )
            return None
        # Handed over (the order step runs in line), QUOTED keeps the lease and the order step
        # starts without a claim statement of its own.
        handed_over = step_started()
        quoted = state_machine.transition(
            db, purchase, State.QUOTED, reason=f"quote {quote.quote_id} at {quote.unit_price} {quote.currency}",
            message_id=message_id, next_action_in=settings.redrive_after_seconds, insert_with=kept,
            hold_claim_for=settings.claim_lease_seconds if hand_over else None,
            changes={**taken, "quote_id": quote.quote_id, "quote_expires_at": quote.expires_at, "last_error": None,
                     "order_evidence": None},
        )
    return Next(StepName.ORDER, claim=Claim(quoted, handed_over) if hand_over else None)


def _mismatch(purchase: Purchase, quote: Quote) -> str | None:
    """A quote for other seats than asked would buy the wrong thing: refuse it."""
    if quote.quantity != purchase.quantity:
        return f"quantity {quote.quantity} quoted, {purchase.quantity} requested"
    if quote.section_name != purchase.section_name:
        return f"section {quote.section_name!r} quoted, {purchase.section_name!r} requested"
    if purchase.row_name is not None and quote.row_name != purchase.row_name:
        return f"row {quote.row_name!r} quoted, {purchase.row_name!r} requested"
    return None


# ---- order ----------------------------------------------------------------------------------------


def place_order(purchase: Purchase, client: Partner, step: StepContext) -> Next | None:
    """QUOTED, claimed (its delivery deadline checked by the core): the intent, then the order."""
    settings, message_id, started = step.settings, step.message_id, step.started
    with autocommit() as db:
        if not _quote_usable(purchase, margin_seconds=settings.quote_safety_margin_seconds):
            metrics.REQUOTES.labels("safety_margin").inc()
            state_machine.transition(
                db, purchase, State.RECEIVED, message_id=message_id,
                reason=f"quote {purchase.quote_id} expires within the {settings.quote_safety_margin_seconds:g}s "
                "safety margin; re-quoting",
                next_action_in=settings.redrive_after_seconds,
            )
            return Next(StepName.QUOTE)
        # The intent: from this commit on, an order may exist for this purchase.
        purchase = state_machine.transition(
            db, purchase, State.ORDERING, reason=f"ordering with quote {purchase.quote_id}",
            message_id=message_id, next_action_in=settings.claim_lease_seconds,
            hold_claim_for=settings.claim_lease_seconds, changes={"order_evidence": OrderEvidence.MAY_EXIST.value},
        )
    return _order(purchase, partner=client, settings=settings, message_id=message_id, first_attempt=True,
                  deadline=step_deadline(settings, started))


def resolve_order(purchase: Purchase, client: Partner, step: StepContext) -> Next | None:
    """ORDER_UNKNOWN, claimed: find out whether the order exists; finish it with the same quote if it
    safely can."""
    settings, message_id, started = step.settings, step.message_id, step.started
    assert purchase.quote_id is not None  # ORDERING is only reached with a quote
    deadline = step_deadline(settings, started)

    try:
        lookup: OrderLookup = client.find_order_for_quote(
            purchase.quote_id, request_id=partner_request_id(purchase, "lookup"), deadline=deadline
        )
    except PartnerError as error:
        lookup = LookupUnknown(f"lookup failed: {error}")
    if isinstance(lookup, OrderFound):
        _confirmed(purchase, lookup.order, settings, message_id, how="found by lookup")
        return None
    seen = "found no order" if isinstance(lookup, OrderAbsent) else f"did not tell ({lookup.reason})"
    if purchase.order_evidence == OrderEvidence.EXISTS:
        return wait_or_hold(purchase, settings, message_id,
                     f"quote {purchase.quote_id} was consumed, so an order exists; the lookup {seen}")
    if _quote_usable(purchase, margin_seconds=0) and not too_close_to_deadline(purchase, settings):
        # The same single-use quote again: 201 is our order, QUOTE_ALREADY_CONSUMED proves one exists.
        return _order(purchase, partner=client, settings=settings, message_id=message_id, first_attempt=False,
                      deadline=deadline)
    if isinstance(lookup, OrderAbsent) and absence_policy_applies(purchase, settings):
        metrics.REQUOTES.labels("absence_grace").inc()
        grace = settings.order_absence_grace_seconds
        return Next(StepName.QUOTE) if record(
            purchase, State.RECEIVED, message_id=message_id,
            reason=f"no order found for quote {purchase.quote_id}, which expired more than {grace:g} s ago "
            "(ORDER_ABSENCE_GRACE_SECONDS policy); re-quoting",
            next_action_in=settings.redrive_after_seconds, changes={"order_evidence": None},
        ) else None
    why = "the quote has expired" if not _quote_usable(purchase, margin_seconds=0) else "the delivery deadline is too close"
    return wait_or_hold(purchase, settings, message_id, f"the lookup {seen}; {why}, so the order is not sent again")


def _order(
    purchase: Purchase, *, partner: Partner, settings: Settings, message_id: str | None, first_attempt: bool,
    deadline: float,
) -> Next | None:
    """Send the order for the purchase's current quote and record what the answer proves.

    On a retry (an earlier attempt's outcome is unknown and may still land at the partner),
    a refusal of *this* request proves nothing about the earlier one: the purchase stays
    unknown and is resolved again, ending in NEEDS_ATTENTION if it never clears up —
    never RECEIVED, PAUSED or FAILED, from where it could be quoted and ordered afresh.
    """
    assert purchase.quote_id is not None
    answer = _send_order(purchase, partner, deadline)
    # Sending the same single-use quote again cannot make a second order: while the answers stay
    # unclear (5xx, timeouts) and the quote and the step have time left, ask again now rather than
    # after a backoff (the quote may not outlive it, or the queue ahead of the next step).
    sent, resends = 1, RESENDS_PER_STEP
    while resends > 0 and _unclear(answer) and _time_left(purchase, deadline) > RESEND_PAUSE_SECONDS:
        resends -= 1
        log.info("order for quote %s still unclear (%s); sending the same quote again", purchase.quote_id, answer)
        pause(RESEND_PAUSE_SECONDS)
        answer = _send_order(purchase, partner, deadline)
        sent += 1
    # A definite refusal proves no order only when it answers the one and only request for the quote.
    first_attempt = first_attempt and sent == 1
    try:
        if isinstance(answer, BaseException):
            raise answer
        order = answer
    except QuoteAlreadyConsumed as error:
        # An order exists from this quote (ours, from an attempt whose answer was lost).
        return _unknown(purchase, error, settings, message_id, evidence=OrderEvidence.EXISTS)
    except QuoteExpired as error:
        if not first_attempt:  # the partner may check expiry before consumption
            return _unknown(purchase, error, settings, message_id)
        metrics.REQUOTES.labels("quote_expired").inc()
        return Next(StepName.QUOTE) if record(
            purchase, State.RECEIVED, f"partner says quote expired ({error.code}); re-quoting", message_id,
            next_action_in=settings.redrive_after_seconds, changes={"last_error": str(error), "order_evidence": None},
        ) else None
    except (AccountError, PermanentError) as error:
        if not first_attempt:
            return _unknown(purchase, error, settings, message_id)
        if isinstance(error, AccountError):
            record(purchase, State.PAUSED, f"account cannot order: {error.code}", message_id,
                   next_action_in=settings.payment_pause_seconds,
                   changes={"last_error": str(error), "order_evidence": None})
        else:
            record(purchase, State.FAILED, f"partner refused the order: {error.code}", message_id,
                   changes={**failure(error.code, error.message), "order_evidence": None})
        return None
    except Exception as error:  # noqa: BLE001  timeouts, resets, 5xx, surprises: the order may exist
        log.warning("order outcome unknown for quote %s: %s", purchase.quote_id, error)
        return _unknown(purchase, error, settings, message_id)
    _confirmed(purchase, order, settings, message_id, how="created")
    return None


# Re-sends of the same quote within one step after an unclear answer, and the pause between them.
RESENDS_PER_STEP = 2
RESEND_PAUSE_SECONDS = 0.5
pause = time.sleep  # tests that simulate time replace it


def _send_order(purchase: Purchase, partner: Partner, deadline: float) -> Order | Exception:
    assert purchase.quote_id is not None
    try:
        return partner.create_order(
            purchase.quote_id,
            delivery_type=purchase.delivery_type,
            delivery_deadline=purchase.delivery_deadline,
            request_id=partner_request_id(purchase, "order"),
            deadline=deadline,
        )
    except Exception as error:  # noqa: BLE001  classified by the caller
        return error


def _unclear(answer: Order | Exception) -> bool:
    """An answer that says nothing definite about this request (5xx, timeout, reset, surprise)."""
    return isinstance(answer, Exception) and not isinstance(
        answer, (QuoteAlreadyConsumed, QuoteExpired, AccountError, PermanentError))


def _time_left(purchase: Purchase, deadline: float) -> float:
    """Seconds this step may still send the quote: before its deadline and before the quote expires."""
    step_left = deadline - time.monotonic()
    if purchase.quote_expires_at is None:
        return 0.0
    quote_left = (purchase.quote_expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    return min(step_left, quote_left)


def _unknown(
    purchase: Purchase, error: Exception, settings: Settings, message_id: str | None,
    *, evidence: OrderEvidence | None = None,
) -> Next | None:
    changes = {"order_evidence": evidence.value} if evidence else {}
    if purchase.state == State.ORDERING:
        return Next(StepName.RESOLVE) if record(
            purchase, State.ORDER_UNKNOWN, f"order outcome unknown: {error}", message_id,
            next_action_in=settings.redrive_after_seconds, changes={"last_error": str(error), **changes},
        ) else None
    # Already ORDER_UNKNOWN: stay there and ask again later.
    return wait_or_hold(purchase, settings, message_id, f"order sent again with quote {purchase.quote_id}: {error}",
                 **changes)


def _confirmed(purchase: Purchase, order: Order, settings: Settings, message_id: str | None, *, how: str) -> None:
    # Logged before the write, so a write that never lands still leaves the order id somewhere.
    log.info("purchase %s: order %s %s (quote %s); recording it", purchase.id, order.order_id, how, order.quote_id)

    def write() -> None:
        try:
            with autocommit() as db:
                state_machine.transition(
                    db, purchase, State.AWAITING_TRANSFER, reason=f"order {order.order_id} {how}",
                    message_id=message_id, next_action_in=settings.transfer_poll_min_seconds,
                    changes=order_columns(purchase, order),
                )
        except StaleTransition:
            late_order(purchase, order, settings, message_id, how=how)

    keep_answer(write, what=f"order {order.order_id}")


def order_columns(purchase: Purchase, order: Order) -> dict[str, object]:
    """The purchase columns a confirmed order sets (also used by `fulfil resolve`, fulfilment/operator/)."""
    return {
        "order_id": order.order_id,
        "order_status": order.status,
        "transfer_email": order.transfer_email,
        "seat_range": order.seat_range,
        "row_assigned": order.row_name,
        "unit_price": order.unit_price if order.unit_price is not None else purchase.unit_price,
        "subtotal": order.subtotal if order.subtotal is not None else purchase.subtotal,
        "last_error": None,
        "failure_code": None,
        "failure_message": None,
    }


def late_order(purchase: Purchase, order: Order, settings: Settings, message_id: str | None, *, how: str) -> None:
    """An order confirmation whose claim had passed on: never dropped (invariant 8), see `keep_late_order`."""
    keep_late_order(purchase, order_id=order.order_id, quote_id=order.quote_id, details=order_details(order),
                    to_state=State.AWAITING_TRANSFER, next_action_in=settings.transfer_poll_min_seconds,
                    changes_for=lambda current: order_columns(current, order), message_id=message_id, how=how)


def _quote_usable(purchase: Purchase, *, margin_seconds: float) -> bool:
    if purchase.quote_expires_at is None:
        return False
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=margin_seconds) < purchase.quote_expires_at


# ---- deliver: the transfer ------------------------------------------------------------------------

FINAL_STATE_FOR_STATUS = {
    "transfer_complete": State.TRANSFER_COMPLETE,
    "transfer_expired": State.TRANSFER_EXPIRED,
    "cancelled": State.CANCELLED,
}
assert set(FINAL_STATE_FOR_STATUS) == ORDER_FINAL_STATUSES



def check_transfer(purchase: Purchase, client: Partner, step: StepContext) -> Next | None:
    """AWAITING_TRANSFER, claimed when its check was due: the order's status, final or polled again."""
    settings, message_id, started = step.settings, step.message_id, step.started
    assert purchase.order_id is not None
    try:
        order = client.get_order(purchase.order_id, request_id=partner_request_id(purchase, "status"),
                                  deadline=step_deadline(settings, started))
    except (NotFound, PermanentError) as error:
        record(purchase, State.NEEDS_ATTENTION, f"order status unreadable: {error.code}", message_id,
               changes=failure(error.code, error.message))
        return None
    except PartnerError as error:
        raise release_and_retry(purchase, error, settings) from error

    final = FINAL_STATE_FOR_STATUS.get(order.status)
    if final is not None:
        record(purchase, final, f"partner reports {order.status}", message_id,
               changes={"order_status": order.status, "last_error": None})
        return None
    with autocommit() as db:
        still_ours = state_machine.reschedule(
            db, purchase, next_action_in=poll_interval(purchase.delivery_deadline, settings),
            order_status=order.status,
        )
    if not still_ours:
        note_late(purchase, f"order {order.order_id} is {order.status}", message_id)
    return None


def poll_interval(deadline: dt.datetime, settings: Settings, now: dt.datetime | None = None) -> float:
    """A quarter of the time left, between the configured minimum and maximum."""
    now = now or dt.datetime.now(dt.UTC)
    left = (deadline - now).total_seconds()
    return max(settings.transfer_poll_min_seconds, min(settings.transfer_poll_seconds, left / 4))
