"""Order steps: QUOTED → ORDERING → the partner's ordered state, and the resolution of unknown outcomes.

The core's part of invariant 1: the step claims the purchase, fails it if its delivery deadline
came too close, and hands it to its partner's flow, which commits the intent (ORDERING, order
evidence `may_exist`) before its order request is sent and resolves an unknown outcome by asking
its partner, never by ordering afresh (the rules: partners/tbb/flow.py; what every flow shares:
flowkit/orders.py).  The core stops the resolution in NEEDS_ATTENTION after
ORDER_RESOLVE_ATTEMPTS claims, for a flow that does not count its own waits.
"""

from __future__ import annotations

import logging
import uuid

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import Claim, Next, claim_for_step, fail_if_deadline_too_close, failure, step_started
from fulfilment.flowkit.flow import PartnerFlow, Partners, StepContext, park_not_enabled
from fulfilment.flowkit.orders import evidence_message
from fulfilment.settings import Settings
from fulfilment.state_machine import OrderEvidence, State

log = logging.getLogger(__name__)


def place_order(
    purchase_id: uuid.UUID, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None = None,
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
    if flow is None:
        park_not_enabled(purchase, settings, message_id)
        return None
    # Outside the block: no pooled connection held during its partner calls.
    return flow.order(purchase, StepContext(settings, message_id, started))


def resolve_order(
    purchase_id: uuid.UUID, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None = None
) -> Next | None:
    """Find out whether the order exists (the flow asks its partner); never order twice."""
    partners = Partners.of(partner)
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
        elif purchase.attempts > settings.order_resolve_attempts and _limits_resolve_attempts(
                partners.flow(purchase.partner)):
            state_machine.transition(
                db, purchase, State.NEEDS_ATTENTION, message_id=message_id,
                reason=f"order outcome still unknown after {settings.order_resolve_attempts} attempts",
                changes=failure("ORDER_OUTCOME_UNKNOWN", evidence_message(purchase)),
            )
            return None
    assert purchase.quote_id is not None  # ORDERING is only reached with a quote
    flow = partners.flow(purchase.partner)
    if flow is None:
        park_not_enabled(purchase, settings, message_id)
        return None
    return flow.resolve(purchase, StepContext(settings, message_id, started))


def _limits_resolve_attempts(flow: PartnerFlow | None) -> bool:
    """A flow may count its waits itself (`PartnerFlow.limits_resolve_attempts`)."""
    return flow is None or flow.limits_resolve_attempts


__all__ = ["place_order", "resolve_order"]
