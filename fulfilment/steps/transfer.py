"""Delivery steps: a purchase waits in its partner's ordered state until its flow finishes it.

- transfer: AWAITING_TRANSFER → TRANSFER_COMPLETE | TRANSFER_EXPIRED | CANCELLED (a partner that
  transfers the tickets to the buyer);
- tickets: AWAITING_TICKETS → TICKETS_ISSUED (a partner that issues tickets).

The core claims the purchase when its next action is due (a duplicate nudge finds it in the future
and does nothing) and hands it to its partner's flow (`PartnerFlow.deliver`), which checks the order
or fetches the tickets, parks the purchase until the next check (from Postgres, never a long broker
delay: invariant 7), or records the outcome.
"""

from __future__ import annotations

import uuid

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import Next, failure, record, step_started
from fulfilment.flowkit.flow import PartnerFlow, Partners, StepContext, park_not_enabled
from fulfilment.settings import Settings
from fulfilment.state_machine import State

# What a purchase whose flow delivers another way is failed with (it should never be here).
NO_FLOW = {State.AWAITING_TRANSFER: ("NO_TRANSFER_FLOW", "transfer", "does not transfer orders"),
           State.AWAITING_TICKETS: ("NO_TICKET_FLOW", "ticket", "does not issue tickets")}


def check_transfer(
    purchase_id: uuid.UUID, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None = None
) -> Next | None:
    return deliver(purchase_id, State.AWAITING_TRANSFER, partner=partner, settings=settings, message_id=message_id)


def fetch_tickets(
    purchase_id: uuid.UUID, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None = None
) -> Next | None:
    return deliver(purchase_id, State.AWAITING_TICKETS, partner=partner, settings=settings, message_id=message_id)


def deliver(purchase_id: uuid.UUID, waiting: State, *, partner: PartnerFlow | Partners, settings: Settings,
            message_id: str | None) -> Next | None:
    started = step_started()
    with autocommit() as db:
        purchase = state_machine.claim(db, purchase_id, [waiting], lease_seconds=settings.claim_lease_seconds,
                                       only_if_due=True)
        if purchase is None:
            return None
    flow = Partners.of(partner).flow(purchase.partner)
    if flow is None:
        park_not_enabled(purchase, settings, message_id)  # its partner may come back
        return None
    if flow.ordered_state != waiting:
        code, kind, does_not = NO_FLOW[waiting]
        record(purchase, State.NEEDS_ATTENTION, f"no {kind} flow for this partner", message_id,
               changes=failure(code, f"partner {purchase.partner!r} {does_not}"))
        return None
    return flow.deliver(purchase, StepContext(settings, message_id, started))
