"""Tickets step: AWAITING_TICKETS -> TICKETS_ISSUED, for a partner that issues tickets.

The core claims the purchase when its next action is due (a duplicate nudge finds it in the
future and does nothing) and hands it to its partner's flow, which fetches the tickets, or parks
the purchase until they can be fetched (a delivery delay date), and records the outcome.
"""

from __future__ import annotations

import logging
import uuid

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.partners.base import Partner
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from fulfilment.steps.common import Next, failure, record, step_started
from fulfilment.steps.flow import PartnerNotEnabled, Partners, StepContext, client_or_park

log = logging.getLogger(__name__)


def fetch_tickets(
    purchase_id: uuid.UUID, *, partner: Partner | Partners, settings: Settings, message_id: str | None = None
) -> Next | None:
    started = step_started()
    with autocommit() as db:
        purchase = state_machine.claim(db, purchase_id, [State.AWAITING_TICKETS],
                                       lease_seconds=settings.claim_lease_seconds, only_if_due=True)
        if purchase is None:
            return None
    partners = Partners.of(partner)
    flow = partners.flow(purchase.partner)
    if flow is None:
        try:
            partners.client(purchase.partner)
        except PartnerNotEnabled:
            client_or_park(partners, purchase, settings, message_id)  # parks it: its partner may come back
            return None
        # A quote/order partner delivers by transfer: this purchase should never be here.
        record(purchase, State.NEEDS_ATTENTION, "no ticket flow for this partner", message_id,
               changes=failure("NO_TICKET_FLOW", f"partner {purchase.partner!r} does not issue tickets"))
        return None
    return flow.deliver(purchase, StepContext(settings, message_id, started))
