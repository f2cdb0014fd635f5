"""The toy partner's flow: quote -> order -> delivered, with the flow kit's fenced primitives only."""

from __future__ import annotations

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import Next, record
from fulfilment.flowkit.flow import StepContext
from fulfilment.flowkit.orders import wait_or_hold
from fulfilment.settings import Settings
from fulfilment.state_machine import OrderEvidence, State
from fulfilment.step_names import StepName
from models import Purchase
from tests.support.toy_partner.partner import ToyPartner


class ToyFlow:
    name = "toy"
    ordered_state = State.AWAITING_TRANSFER
    limits_resolve_attempts = True

    def __init__(self, partner: ToyPartner) -> None:
        self.partner = partner

    def quote(self, purchase: Purchase, step: StepContext) -> Next | None:
        quote_id, expires_at, unit_price = self.partner.quote(purchase.id)
        quoted = record(purchase, State.QUOTED, f"toy quote {quote_id}", step.message_id,
                        next_action_in=step.settings.redrive_after_seconds,
                        changes={"quote_id": quote_id, "quote_expires_at": expires_at, "unit_price": unit_price,
                                 "subtotal": unit_price * purchase.quantity, "quotes_taken": purchase.quotes_taken + 1})
        return Next(StepName.ORDER) if quoted else None

    def order(self, purchase: Purchase, step: StepContext) -> Next | None:
        assert purchase.quote_id is not None
        with autocommit() as db:  # the intent, before the order is sent
            purchase = state_machine.transition(
                db, purchase, State.ORDERING, reason=f"ordering with toy quote {purchase.quote_id}",
                message_id=step.message_id, next_action_in=step.settings.claim_lease_seconds,
                hold_claim_for=step.settings.claim_lease_seconds,
                changes={"order_evidence": OrderEvidence.MAY_EXIST.value})
        return self._ordered(purchase, self.partner.order(purchase.quote_id), step, how="created")

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        assert purchase.quote_id is not None
        found = self.partner.find_order(purchase.quote_id)
        if found is None:  # absence proves nothing: look again later, then a person
            return wait_or_hold(purchase, step.settings, step.message_id, "the toy partner knows no order (yet)")
        return self._ordered(purchase, found, step, how="found")

    def deliver(self, purchase: Purchase, step: StepContext) -> Next | None:
        record(purchase, State.TRANSFER_COMPLETE, f"toy order {purchase.order_id} delivered", step.message_id,
               changes={"order_status": "transfer_complete"})
        return None

    def release(self, purchase: Purchase, settings: Settings) -> None:
        """The toy partner holds nothing before an order."""

    def _ordered(self, purchase: Purchase, order_id: str, step: StepContext, *, how: str) -> Next | None:
        done = record(purchase, State.AWAITING_TRANSFER, f"toy order {order_id} {how}", step.message_id,
                      next_action_in=0.0, changes={"order_id": order_id, "order_status": "awaiting_transfer"})
        return Next(StepName.TRANSFER) if done else None
