"""Order steps: QUOTED → ORDERING → AWAITING_TRANSFER, and the resolution of unknown outcomes.

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
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fulfilment import metrics, state_machine
from fulfilment.db import autocommit, session_scope
from fulfilment.partners.base import (
    AccountError,
    LookupUnknown,
    Order,
    OrderAbsent,
    OrderFound,
    OrderLookup,
    Partner,
    PartnerError,
    PermanentError,
    QuoteAlreadyConsumed,
    QuoteExpired,
    order_details,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import ORDERED, TERMINAL, OrderEvidence, StaleTransition, State
from fulfilment.step_names import StepName
from fulfilment.steps.common import (
    Claim,
    Next,
    claim_for_step,
    fail_if_deadline_too_close,
    failure,
    keep_answer,
    park,
    partner_request_id,
    record,
    step_deadline,
    step_started,
    too_close_to_deadline,
)
from fulfilment.steps.flow import Partners, StepContext, client_or_park
from models import Purchase

log = logging.getLogger(__name__)

def place_order(
    purchase_id: uuid.UUID, *, partner: Partner | Partners, settings: Settings, message_id: str | None = None,
    claim: Claim | None = None,
) -> Next | None:
    """`claim`: the purchase, QUOTED and claimed by the quote step that hands it over (in line)."""
    partners = Partners.of(partner)
    with autocommit() as db:
        purchase, started = claim_for_step(db, purchase_id, [State.QUOTED], claim, settings)
        if purchase is None:
            return None
        ended = fail_if_deadline_too_close(db, purchase, settings, message_id)
        flow = partners.flow(purchase.partner)
    if ended:
        if flow is not None:
            flow.release(purchase, settings)
        return None
    if flow is not None:  # outside the block: no pooled connection held during its partner calls
        return flow.order(purchase, StepContext(settings, message_id, started))
    client = client_or_park(partners, purchase, settings, message_id)
    if client is None:
        return None
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


def resolve_order(
    purchase_id: uuid.UUID, *, partner: Partner | Partners, settings: Settings, message_id: str | None = None
) -> Next | None:
    """Find out whether the order exists; finish it with the same quote if it safely can."""
    started = step_started()
    with autocommit() as db:
        purchase = state_machine.claim(
            db, purchase_id, [State.ORDERING, State.ORDER_UNKNOWN], lease_seconds=settings.claim_lease_seconds
        )
        if purchase is None:
            return None
        if purchase.state == State.ORDERING:
            # The worker that committed the intent never reported back (killed, or its call
            # outlived its lease): whatever it sent may have reached the partner.
            purchase = state_machine.transition(
                db, purchase, State.ORDER_UNKNOWN, message_id=message_id,
                reason=f"the order attempt with quote {purchase.quote_id} never reported back; resolving",
                next_action_in=settings.claim_lease_seconds, hold_claim_for=settings.claim_lease_seconds,
                changes={"order_evidence": purchase.order_evidence or OrderEvidence.MAY_EXIST.value},
            )
        elif purchase.attempts > settings.order_resolve_attempts and Partners.of(partner).flow(purchase.partner) is None:
            # A partner's own flow counts its waits itself (TM: a commit still being processed is
            # polled against its cart's window, never against a number of polls).
            state_machine.transition(
                db, purchase, State.NEEDS_ATTENTION, message_id=message_id,
                reason=f"order outcome still unknown after {settings.order_resolve_attempts} attempts",
                changes=failure("ORDER_OUTCOME_UNKNOWN", evidence_message(purchase)),
            )
            return None
    assert purchase.quote_id is not None  # ORDERING is only reached with a quote
    partners = Partners.of(partner)
    flow = partners.flow(purchase.partner)
    if flow is not None:
        return flow.resolve(purchase, StepContext(settings, message_id, started))
    client = client_or_park(partners, purchase, settings, message_id)
    if client is None:
        return None
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


def wait_or_hold(purchase: Purchase, settings: Settings, message_id: str | None, why: str,
                 **changes: Any) -> Next | None:
    """Look again later (backoff parked in Postgres), or hand over to a person once the
    lookups are used up.  Every partner's resolution of an unknown order ends this way."""
    if purchase.attempts >= settings.order_resolve_attempts:
        evidence = changes.get("order_evidence", purchase.order_evidence)
        record(purchase, State.NEEDS_ATTENTION, message_id=message_id,
               reason=f"order outcome still unknown after {purchase.attempts} lookups",
               changes={**changes, **failure("ORDER_OUTCOME_UNKNOWN", f"{evidence_message(purchase, evidence)}; {why}")})
        return None
    wait = resolve_backoff(purchase.attempts, settings)
    log.info("purchase %s: order outcome still unknown (%s); looking again in %.1f s", purchase.id, why, wait)
    park(purchase, next_action_in=wait, error=why, message_id=message_id, **changes)
    return None


def resolve_backoff(attempts: int, settings: Settings) -> float:
    """REDRIVE_AFTER_SECONDS, doubled at each lookup, at most ORDER_RESOLVE_MAX_INTERVAL_SECONDS."""
    return min(settings.order_resolve_max_interval_seconds,
               settings.redrive_after_seconds * 2 ** min(max(attempts - 1, 0), 30))


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
    """The purchase columns a confirmed order sets (also used by `fulfil resolve`, steps/operator.py)."""
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


def keep_late_order(purchase: Purchase, *, order_id: str, quote_id: str | None, details: Mapping[str, Any],
                    to_state: State, next_action_in: float, changes_for: Callable[[Purchase], Mapping[str, Any]],
                    message_id: str | None, how: str) -> None:
    """An order whose answer came after its claim had passed on, for any partner: never dropped.

    Applied (`to_state`, the partner's ordered state, with `changes_for(current)`) if the purchase
    still waits for exactly this answer (resolving the same quote or cart, no order recorded); a
    repeat of the recorded order is only noted; anything else is an orphan order (`details`), kept
    with its purchase and raised to operators.
    """
    with session_scope() as session:
        current = session.get_one(Purchase, purchase.id, with_for_update=True)
        state = State(current.state)
        if current.order_id == order_id and state not in STILL_RESOLVING:
            state_machine.late_answer(session, current.id, step="order", message_id=message_id,
                                      answer=f"order {order_id} {how}, already recorded")
            return
        if state in STILL_RESOLVING and current.order_id in (None, order_id) and current.quote_id == quote_id:
            # This purchase's own order (its quote or cart, no other order known): it goes on, even from
            # a hold for a person or a stall; the order's answer is never left waiting there.
            state_machine.transition(
                session, current, to_state, message_id=message_id,
                reason=f"order {order_id} {how} (a late answer: the purchase was still resolving quote {quote_id})",
                next_action_in=next_action_in, changes=changes_for(current),
            )
            return
        reason = (f"order {order_id} (quote {quote_id}) {how} after the purchase moved on "
                  f"(it is {state}{f' with order {current.order_id}' if current.order_id else ''}); "
                  "check it with the partner")
        state_machine.orphan_order(session, current, order=details, reason=reason, message_id=message_id)
        if state not in TERMINAL and state not in (State.NEEDS_ATTENTION, *ORDERED):
            state_machine.transition(session, current, State.NEEDS_ATTENTION, message_id=message_id,
                                     reason=f"orphan order {order_id} needs a person",
                                     changes=failure("ORPHAN_ORDER", reason))


# Where a purchase may still be waiting for its order's answer (an order id alone, found by a lookup,
# may be recorded already: the answer then brings the rest, e.g. TM's order token).
STILL_RESOLVING = frozenset({State.ORDERING, State.ORDER_UNKNOWN, State.NEEDS_ATTENTION, State.STALLED})


def evidence_message(purchase: Purchase, evidence: str | None = None) -> str:
    evidence = evidence or purchase.order_evidence
    if evidence == OrderEvidence.EXISTS:
        return (f"the partner said quote {purchase.quote_id} was already consumed, so an order from it exists, "
                "but no lookup found it; find it with the partner before retrying")
    return (f"an order request with quote {purchase.quote_id} may have reached the partner and no lookup found "
            "an order; check with the partner before retrying")


def absence_policy_applies(purchase: Purchase, settings: Settings) -> bool:
    grace = settings.order_absence_grace_seconds
    if grace is None or purchase.order_evidence == OrderEvidence.EXISTS or purchase.quote_expires_at is None:
        return False
    return dt.datetime.now(dt.UTC) >= purchase.quote_expires_at + dt.timedelta(seconds=grace)


def _quote_usable(purchase: Purchase, *, margin_seconds: float) -> bool:
    if purchase.quote_expires_at is None:
        return False
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=margin_seconds) < purchase.quote_expires_at



__all__ = ["STILL_RESOLVING", "absence_policy_applies", "keep_late_order", "late_order", "order_columns", "place_order",
           "resolve_backoff", "resolve_order", "wait_or_hold"]
