"""What happens to a purchase when its message's retries are exhausted: it is STALLED,
visibly, with the last error, unless it moved on or another worker holds it now."""

from __future__ import annotations

import logging
import uuid

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.state_machine import StaleTransition, State
from models import Purchase

log = logging.getLogger(__name__)


def stall_after_exhausted_retries(
    purchase_id: uuid.UUID, *, step: str, retries: int, error: str, message_id: str | None
) -> State | None:
    """Stall the purchase; return the state it stalled from, or None if it was left alone."""
    try:
        with session_scope() as session:
            purchase = session.get(Purchase, purchase_id, with_for_update=True)
            if purchase is None or not state_machine.is_live(State(purchase.state)):
                return None
            if state_machine.lease_held(session, purchase):
                # Another worker holds a live claim on it: that worker decides (fencing).
                log.info("purchase %s: %s gave up, but another worker holds the purchase; not stalled",
                         purchase_id, step)
                return None
            from_state = State(purchase.state)
            state_machine.transition(
                session, purchase, State.STALLED, message_id=message_id,
                reason=f"{step} gave up after {retries} retries", changes={"last_error": error[:2000]},
            )
    except StaleTransition:
        log.info("purchase %s moved on before it could be marked stalled", purchase_id)
        return None
    log.error("purchase %s stalled: %s", purchase_id, error)
    return from_state
