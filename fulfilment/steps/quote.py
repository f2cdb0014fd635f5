"""Quote step: RECEIVED (or PAUSED) → QUOTED, with a fresh partner quote.

Invariant 3's other half lives here: a purchase is re-quoted at most
`max_requotes` times, and never accepted above its `max_unit_price`.
"""

from __future__ import annotations

import logging
import uuid

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.partners.base import AccountError, Partner, PartnerError, PermanentError, Quote, QuoteRequest
from fulfilment.settings import Settings
from fulfilment.state_machine import StaleTransition, State
from fulfilment.statements import Row
from fulfilment.step_names import StepName
from fulfilment.steps.common import (
    Claim,
    Next,
    claim_for_step,
    fail_if_deadline_too_close,
    failure,
    note_late,
    partner_request_id,
    record,
    release_and_retry,
    step_deadline,
    step_started,
)
from fulfilment.steps.flow import Partners, StepContext, client_or_park
from models import PartnerQuote, Purchase

log = logging.getLogger(__name__)


def quote(
    purchase_id: uuid.UUID, *, partner: Partner | Partners, settings: Settings, message_id: str | None = None,
    hand_over: bool = False, claim: Claim | None = None,
) -> Next | None:
    """`hand_over`: the caller runs the order step at once (runner.deliver): QUOTED keeps the
    lease and the returned `Next` carries the claimed purchase, which the caller must use or
    give back.  `claim`: the purchase as intake stored it, born claimed (no claim statement)."""
    with autocommit() as db:
        purchase, started = claim_for_step(db, purchase_id, [State.RECEIVED, State.PAUSED], claim, settings)
        if purchase is None:
            return None
        ended = fail_if_deadline_too_close(db, purchase, settings, message_id)
        if not ended and purchase.quotes_taken > settings.max_requotes:
            state_machine.transition(
                db,
                purchase,
                State.FAILED,
                reason=f"re-quote limit reached ({settings.max_requotes} re-quotes)",
                message_id=message_id,
                changes=failure("REQUOTE_LIMIT", f"{purchase.quotes_taken} quotes taken, none could be ordered"),
            )
            ended = True

    partners = Partners.of(partner)
    flow = partners.flow(purchase.partner)
    if ended:
        if flow is not None:
            flow.release(purchase, settings)
        return None
    if flow is not None:
        return flow.quote(purchase, StepContext(settings, message_id, started, hand_over))
    client = client_or_park(partners, purchase, settings, message_id)
    if client is None:
        return None
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
