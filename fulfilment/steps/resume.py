"""Operator resumption: `fulfil retry` and `fulfil dlq replay` bring a held purchase back to life.

A purchase held in STALLED goes back to where it stalled, except that one stalled
while ORDERING resumes as ORDER_UNKNOWN: an order may exist, so it must be looked
up, never placed afresh (invariant 1).  NEEDS_ATTENTION resumes as ORDER_UNKNOWN
(resolve again) or, when the order is known, AWAITING_TRANSFER — but only by `fulfil
retry`, after a person checked with the partner: replaying an old dead letter
(`fulfil dlq replay`) never releases a purchase held in NEEDS_ATTENTION.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.settings import PolicySettings
from fulfilment.state_machine import NEXT_STEP, TERMINAL, OrderEvidence, State
from fulfilment.step_names import StepName
from models import OrphanOrder, Purchase

RESUME_INTO: dict[State, State] = {
    State.RECEIVED: State.RECEIVED,
    State.PAUSED: State.PAUSED,
    State.QUOTED: State.QUOTED,
    State.ORDERING: State.ORDER_UNKNOWN,
    State.ORDER_UNKNOWN: State.ORDER_UNKNOWN,
    State.AWAITING_TRANSFER: State.AWAITING_TRANSFER,
    State.AWAITING_TICKETS: State.AWAITING_TICKETS,
}


# Resumed into these, a purchase quotes or orders afresh.
BEFORE_ORDER = frozenset({State.RECEIVED, State.PAUSED, State.QUOTED})


class CannotResume(Exception):
    pass


@dataclass(frozen=True)
class Resumed:
    purchase_id: uuid.UUID
    from_state: State
    to_state: State
    step: StepName

    @property
    def changed(self) -> bool:
        return self.from_state != self.to_state


def resume(purchase_id: uuid.UUID, *, settings: PolicySettings, reason: str, checked_by_person: bool = True) -> Resumed:
    """Move a held purchase back into its live state; a live one is left as it is.

    Returns the step to nudge.  Raises CannotResume for unknown or finished purchases,
    and for NEEDS_ATTENTION unless `checked_by_person` (an operator's `fulfil retry`).
    """
    with session_scope() as session:
        purchase = session.get(Purchase, purchase_id, with_for_update=True)
        if purchase is None:
            raise CannotResume(f"no purchase {purchase_id}")
        state = State(purchase.state)
        if state in TERMINAL:
            raise CannotResume(f"purchase {purchase_id} is {state}: finished, nothing to resume")
        if state in NEXT_STEP:
            return Resumed(purchase_id, state, state, NEXT_STEP[state])
        if state is State.NEEDS_ATTENTION and not checked_by_person:
            raise CannotResume(
                f"purchase {purchase_id} needs attention ({purchase.failure_code}): an order may exist; "
                "check with the partner, then `fulfil retry` it"
            )
        target = _target(purchase, state)
        changes: dict[str, object] = {"failure_code": None, "failure_message": None, "stalled_from": None}
        orphans = list(session.scalars(select(OrphanOrder.order_id).where(
            OrphanOrder.purchase_id == purchase_id, OrphanOrder.resolved_at.is_(None))))
        if orphans:
            # An order the purchase did not expect is known: never order on top of it (invariant 1).
            if target in BEFORE_ORDER:
                raise CannotResume(
                    f"purchase {purchase_id} has orphan order(s) {', '.join(orphans)} not yet resolved: resuming it "
                    f"as {target} could order again. Record the order with `fulfil resolve`, or cancel it with the "
                    "partner and then cancel the purchase")
            changes["order_evidence"] = OrderEvidence.EXISTS.value  # the absence policy never applies to it
        state_machine.transition(
            session, purchase, target, reason=reason, next_action_in=settings.redrive_after_seconds,
            changes=changes,
        )
        return Resumed(purchase_id, state, target, NEXT_STEP[target])


def _target(purchase: Purchase, state: State) -> State:
    if state is State.STALLED:
        if purchase.stalled_from is None:
            raise CannotResume(f"purchase {purchase.id} is stalled but its previous state is unknown")
        return RESUME_INTO[State(purchase.stalled_from)]
    # NEEDS_ATTENTION: the order is known (status unreadable) or must be resolved again.
    return state_machine.ordered_state(purchase) if purchase.order_id else State.ORDER_UNKNOWN
