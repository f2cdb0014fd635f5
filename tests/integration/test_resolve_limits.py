"""The core's stop on resolving an unknown order (`steps/order.resolve_order`, issue 20).

After ORDER_RESOLVE_ATTEMPTS claims, a purchase whose order outcome is still unknown goes to
NEEDS_ATTENTION, without asking its partner again: for a flow that does not count its own waits
(`limits_resolve_attempts`), and for a purchase whose partner is not enabled in this process.  A
flow that counts its own waits (Ticketmaster: a commit polled against its cart's window) is asked
every time.  Real Postgres; the toy partner's flow (in memory) records what it is asked.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import text

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Next
from fulfilment.flowkit.flow import Partners, StepContext
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from fulfilment.steps.order import resolve_order
from models import Purchase
from tests.support.factories import reload, stored_purchase
from tests.support.toy_partner.flow import ToyFlow
from tests.support.toy_partner.partner import ToyPartner

LIMIT = 3


class RecordingFlow(ToyFlow):
    """The toy flow, noting each purchase it is asked to resolve."""

    def __init__(self, *, counts_its_own_waits: bool) -> None:
        super().__init__(ToyPartner())
        self.limits_resolve_attempts = not counts_its_own_waits
        self.resolved: list[uuid.UUID] = []

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        self.resolved.append(purchase.id)
        return super().resolve(purchase, step)


def _order_unknown(*, attempts: int) -> uuid.UUID:
    """A purchase whose order outcome is unknown, claimed `attempts` times already, claimable now."""
    purchase_id = stored_purchase()
    steps = ((State.QUOTED, {"quote_id": f"TOYQ-{purchase_id}", "unit_price": Decimal("12.50"),
                             "subtotal": Decimal("25.00"),
                             "quote_expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}),
             (State.ORDERING, {"order_evidence": "may_exist"}),
             (State.ORDER_UNKNOWN, {}))
    for to_state, changes in steps:
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=0, changes=changes)
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET attempts = :n WHERE id = :id"), {"n": attempts, "id": purchase_id})
    return purchase_id


def _settings():  # type: ignore[no-untyped-def]
    return get_settings().model_copy(update={"order_resolve_attempts": LIMIT})


def test_past_the_limit_a_flow_that_does_not_count_stops_in_needs_attention_unasked() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _order_unknown(attempts=LIMIT)  # this claim is attempt LIMIT + 1
    assert resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    assert flow.resolved == []


def test_within_the_limit_the_flow_is_asked() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _order_unknown(attempts=LIMIT - 1)  # this claim is attempt LIMIT: the last one allowed
    resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m")
    assert flow.resolved == [purchase_id]  # what it decided is the flow's (flowkit.orders.wait_or_hold)


def test_a_flow_that_counts_its_own_waits_is_asked_past_the_core_s_limit() -> None:
    flow = RecordingFlow(counts_its_own_waits=True)
    purchase_id = _order_unknown(attempts=LIMIT + 5)
    resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m")
    assert flow.resolved == [purchase_id]


def test_past_the_limit_a_purchase_whose_partner_is_not_enabled_stops_in_needs_attention() -> None:
    """No flow here to count anything: the core's limit holds, rather than parking it for ever."""
    purchase_id = _order_unknown(attempts=LIMIT)
    assert resolve_order(purchase_id, partner=Partners(flows={}), settings=_settings(), message_id="m") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
