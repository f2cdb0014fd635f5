"""Quote step: RECEIVED (or PAUSED) → QUOTED, by the purchase's partner flow.

Invariant 3's other half starts here: a purchase is re-quoted at most `max_requotes` times (the
flow never accepts a quote above its `max_unit_price`).
"""

from __future__ import annotations

import logging
import uuid

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import Claim, Next, claim_for_step, fail_if_deadline_too_close, failure
from fulfilment.flowkit.flow import PartnerFlow, Partners, StepContext, park_not_enabled
from fulfilment.settings import Settings
from fulfilment.state_machine import State

log = logging.getLogger(__name__)


def quote(
    purchase_id: uuid.UUID, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None = None,
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

    flow = Partners.of(partner).flow(purchase.partner)
    if ended:
        if flow is not None:
            flow.release(purchase, settings)
        return None
    if flow is None:
        park_not_enabled(purchase, settings, message_id)
        return None
    return flow.quote(purchase, StepContext(settings, message_id, started, hand_over))
