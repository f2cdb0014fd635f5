"""Orders whose outcome is unknown, for every partner: never two orders, never a lost one.

What any flow's resolution of an unknown order ends with (look again later, or hand over to a
person: `wait_or_hold`), the order answer that came after its claim passed on (`keep_late_order`),
and the operators' absence policy (ORDER_ABSENCE_GRACE_SECONDS).  The rules themselves are told
in `fulfilment/partners/tbb/flow.py` (invariant 1).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Next, failure, park, record
from fulfilment.settings import Settings
from fulfilment.state_machine import ORDERED, TERMINAL, OrderEvidence, State
from models import Purchase

log = logging.getLogger(__name__)


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



__all__ = ["STILL_RESOLVING", "absence_policy_applies", "evidence_message", "keep_late_order", "resolve_backoff",
           "wait_or_hold"]
