"""Order steps: QUOTED → ORDERING → AWAITING_TRANSFER, and the resolution of unknown outcomes.

Invariant 1 (at most one partner order per purchase) rests on three rules kept here:
- the intent (ORDERING) is committed *before* `POST /v1/orders` is sent;
- after that, only a definite partner answer may lead away from the order path;
  anything else (timeout, reset, 5xx) is ORDER_UNKNOWN;
- an unknown outcome is resolved by asking the partner (lookup by quote) and by
  retrying the *same* single-use quote, never by quoting and ordering afresh while
  an order may exist.  An expired quote with no order found is dead for good, so
  only then may the purchase be re-quoted.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from fulfilment import metrics, state_machine
from fulfilment.db import session_scope
from fulfilment.partners.base import (
    AccountError,
    Order,
    Partner,
    PartnerError,
    PermanentError,
    QuoteAlreadyConsumed,
    QuoteExpired,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from fulfilment.steps.common import Next, failure, partner_request_id, record, release_and_retry
from models import Purchase

log = logging.getLogger(__name__)


def place_order(
    purchase_id: uuid.UUID, *, partner: Partner, settings: Settings, message_id: str | None = None
) -> Next | None:
    with session_scope() as session:
        purchase = state_machine.claim(session, purchase_id, [State.QUOTED], lease_seconds=settings.claim_lease_seconds)
        if purchase is None:
            return None
        if not _quote_usable(purchase, margin_seconds=settings.quote_safety_margin_seconds):
            metrics.REQUOTES.labels("safety_margin").inc()
            state_machine.transition(
                session, purchase, State.RECEIVED, message_id=message_id,
                reason=f"quote {purchase.quote_id} expires within the {settings.quote_safety_margin_seconds:g}s "
                "safety margin; re-quoting",
                next_action_in=settings.redrive_after_seconds,
            )
            return Next("quote_purchase")
        # The intent: from this commit on, an order may exist for this purchase.
        purchase = state_machine.transition(
            session, purchase, State.ORDERING, reason=f"ordering with quote {purchase.quote_id}",
            message_id=message_id, next_action_in=settings.claim_lease_seconds,
            hold_claim_for=settings.claim_lease_seconds,
        )
    return _order(purchase, partner=partner, settings=settings, message_id=message_id, first_attempt=True)


def resolve_order(
    purchase_id: uuid.UUID, *, partner: Partner, settings: Settings, message_id: str | None = None
) -> Next | None:
    """Find out whether the order exists; finish it with the same quote if it safely can."""
    with session_scope() as session:
        purchase = state_machine.claim(
            session, purchase_id, [State.ORDERING, State.ORDER_UNKNOWN], lease_seconds=settings.claim_lease_seconds
        )
        if purchase is None:
            return None
        if purchase.attempts > settings.order_resolve_attempts:
            state_machine.transition(
                session, purchase, State.NEEDS_ATTENTION, message_id=message_id,
                reason=f"order outcome still unknown after {settings.order_resolve_attempts} attempts",
                changes=failure("ORDER_OUTCOME_UNKNOWN",
                                f"could not confirm whether quote {purchase.quote_id} was ordered; "
                                "check with the partner before retrying"),
            )
            return None
    assert purchase.quote_id is not None  # ORDERING is only reached with a quote

    try:
        existing = partner.find_order_for_quote(purchase.quote_id, request_id=partner_request_id(purchase, "lookup"))
    except PartnerError as error:
        raise release_and_retry(purchase, error, settings) from error
    if existing is not None:
        _confirmed(purchase, existing, settings, message_id, how="found by lookup")
        return None
    if not _quote_usable(purchase, margin_seconds=0):
        # Expired and unused: the partner will never accept it now, so no order can appear from it.
        metrics.REQUOTES.labels("expired_unused").inc()
        record(purchase, State.RECEIVED, f"no order exists for expired quote {purchase.quote_id}; re-quoting",
               message_id, next_action_in=settings.redrive_after_seconds)
        return Next("quote_purchase")
    return _order(purchase, partner=partner, settings=settings, message_id=message_id, first_attempt=False)


def _order(
    purchase: Purchase, *, partner: Partner, settings: Settings, message_id: str | None, first_attempt: bool
) -> Next | None:
    """Send the order for the purchase's current quote and record what the answer proves.

    On a retry (an earlier attempt's outcome is unknown and may still land at the partner),
    a refusal of *this* request proves nothing about the earlier one: the purchase stays
    unknown and is resolved again, ending in NEEDS_ATTENTION if it never clears up —
    never PAUSED or FAILED, from where it could be quoted and ordered afresh.
    """
    assert purchase.quote_id is not None
    try:
        order = partner.create_order(
            purchase.quote_id,
            delivery_type=purchase.delivery_type,
            delivery_deadline=purchase.delivery_deadline,
            request_id=partner_request_id(purchase, "order"),
        )
    except QuoteExpired as error:
        metrics.REQUOTES.labels("quote_expired").inc()
        record(purchase, State.RECEIVED, f"partner says quote expired ({error.code}); re-quoting", message_id,
               next_action_in=settings.redrive_after_seconds, changes={"last_error": str(error)})
        return Next("quote_purchase")
    except QuoteAlreadyConsumed as error:
        # An order exists from this quote (ours, from an attempt whose answer was lost).
        return _unknown(purchase, error, settings, message_id)
    except (AccountError, PermanentError) as error:
        if not first_attempt:
            return _unknown(purchase, error, settings, message_id)
        if isinstance(error, AccountError):
            record(purchase, State.PAUSED, f"account cannot order: {error.code}", message_id,
                   next_action_in=settings.payment_pause_seconds, changes={"last_error": str(error)})
        else:
            record(purchase, State.FAILED, f"partner refused the order: {error.code}", message_id,
                   changes=failure(error.code, error.message))
        return None
    except Exception as error:  # noqa: BLE001  timeouts, resets, 5xx, surprises: the order may exist
        log.warning("order outcome unknown for quote %s: %s", purchase.quote_id, error)
        return _unknown(purchase, error, settings, message_id)
    _confirmed(purchase, order, settings, message_id, how="created")
    return None


def _unknown(purchase: Purchase, error: Exception, settings: Settings, message_id: str | None) -> Next | None:
    if purchase.state == State.ORDERING:
        record(purchase, State.ORDER_UNKNOWN, f"order outcome unknown: {error}", message_id,
               next_action_in=settings.redrive_after_seconds, changes={"last_error": str(error)})
        return Next("resolve_order")
    # Already ORDER_UNKNOWN: stay there; the retried message (or the scheduler) asks again.
    raise release_and_retry(purchase, error, settings) from error


def _confirmed(purchase: Purchase, order: Order, settings: Settings, message_id: str | None, *, how: str) -> None:
    record(
        purchase, State.AWAITING_TRANSFER, f"order {order.order_id} {how}", message_id,
        next_action_in=settings.transfer_poll_min_seconds,
        changes={
            "order_id": order.order_id,
            "order_status": order.status,
            "transfer_email": order.transfer_email,
            "seat_range": order.seat_range,
            "row_assigned": order.row_name,
            "unit_price": order.unit_price if order.unit_price is not None else purchase.unit_price,
            "subtotal": order.subtotal if order.subtotal is not None else purchase.subtotal,
            "last_error": None,
        },
    )


def _quote_usable(purchase: Purchase, *, margin_seconds: float) -> bool:
    if purchase.quote_expires_at is None:
        return False
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=margin_seconds) < purchase.quote_expires_at
