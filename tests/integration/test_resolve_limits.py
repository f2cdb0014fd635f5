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


def _order_unknown(*, attempts: int, evidence: str = "may_exist") -> uuid.UUID:
    """A purchase whose order outcome is unknown, claimed `attempts` times already, claimable now."""
    purchase_id = stored_purchase()
    steps = ((State.QUOTED, {"quote_id": f"TOYQ-{purchase_id}", "unit_price": Decimal("12.50"),
                             "subtotal": Decimal("25.00"),
                             "quote_expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}),
             (State.ORDERING, {"order_evidence": evidence}),
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


def test_the_person_is_told_what_the_evidence_says() -> None:
    """The core's stop says what is known: an order may exist, or the partner said one does."""
    flow = RecordingFlow(counts_its_own_waits=False)
    for evidence, told in (("may_exist", "an order request with quote {q} may have reached the partner and no lookup "
                                         "found an order; check with the partner before retrying"),
                           ("exists", "the partner said quote {q} was already consumed, so an order from it exists, "
                                      "but no lookup found it; find it with the partner before retrying")):
        purchase_id = _order_unknown(attempts=LIMIT, evidence=evidence)
        resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m")
        purchase = reload(purchase_id)
        assert purchase.failure_message == told.format(q=purchase.quote_id)


def test_the_resolution_backs_off_doubling_from_the_redrive_delay_up_to_its_cap() -> None:
    """REDRIVE_AFTER_SECONDS at the first lookups, doubled at each one after, never more than
    ORDER_RESOLVE_MAX_INTERVAL_SECONDS; the exponent stops at 30 (no overflow for a purchase asked
    very many times)."""
    from fulfilment.flowkit.orders import resolve_backoff

    wide = get_settings().model_copy(update={"redrive_after_seconds": 2.0, "order_resolve_max_interval_seconds": 1e12})
    assert [resolve_backoff(attempts, wide) for attempts in (0, 1, 2, 3, 4)] == [2.0, 2.0, 4.0, 8.0, 16.0]
    assert resolve_backoff(31, wide) == resolve_backoff(1000, wide) == 2.0 * 2 ** 30
    capped = wide.model_copy(update={"order_resolve_max_interval_seconds": 10.0})
    assert [resolve_backoff(attempts, capped) for attempts in (3, 4, 5)] == [8.0, 10.0, 10.0]
