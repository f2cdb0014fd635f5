"""The core's steps before the flow (`steps/quote.py`, `steps/order.py`, `steps/transfer.py`, issue
20): the stop on resolving an unknown order, and what a step does before it hands a purchase to its
partner's flow.

After ORDER_RESOLVE_ATTEMPTS claims, a purchase whose order outcome is still unknown goes to
NEEDS_ATTENTION, without asking its partner again: for a flow that does not count its own waits
(`limits_resolve_attempts`), and for a purchase whose partner is not enabled in this process.  A
flow that counts its own waits (Ticketmaster: a commit polled against its cart's window) is asked
every time.  Before the flow: a quote or order step fails a purchase whose delivery deadline came
too close, and a quote step one past its re-quote limit (letting the partner release what it
holds); a resolution takes over a purchase whose worker never reported back, holding its claim for
the flow; a delivery step hands a due purchase to its flow (one whose flow delivers another way goes
to a person); a purchase whose partner is not enabled here waits.  Real Postgres; the toy partner's
flow (in memory) records what it is asked.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit import flow as flow_module
from fulfilment.flowkit.fencing import DEADLINE_CODE, Next
from fulfilment.flowkit.flow import Partners, StepContext
from fulfilment.settings import Settings, get_settings
from fulfilment.state_machine import State
from fulfilment.steps.order import place_order, resolve_order
from fulfilment.steps.quote import quote
from fulfilment.steps.transfer import check_transfer, fetch_tickets
from models import Purchase, PurchaseTransition
from tests.support.factories import reload, stored_purchase
from tests.support.toy_partner.flow import ToyFlow
from tests.support.toy_partner.partner import ToyPartner

LIMIT = 3


class RecordingFlow(ToyFlow):
    """The toy flow, noting each purchase it is asked to quote, order, resolve or deliver."""

    def __init__(self, *, counts_its_own_waits: bool) -> None:
        super().__init__(ToyPartner())
        self.limits_resolve_attempts = not counts_its_own_waits
        self.resolved: list[uuid.UUID] = []
        self.ordered: list[uuid.UUID] = []
        self.quoted: list[tuple[uuid.UUID, StepContext]] = []
        self.delivered: list[tuple[uuid.UUID, StepContext]] = []
        self.released: list[tuple[uuid.UUID, Settings]] = []
        self.handed: list[Purchase] = []  # the purchase each call was handed
        self.stored: list[Purchase] = []  # the purchase's row in Postgres as each call began

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        self.resolved.append(purchase.id)
        self._asked(purchase)
        return super().resolve(purchase, step)

    def order(self, purchase: Purchase, step: StepContext) -> Next | None:
        self.ordered.append(purchase.id)
        return super().order(purchase, step)

    def deliver(self, purchase: Purchase, step: StepContext) -> Next | None:
        self.delivered.append((purchase.id, step))
        self._asked(purchase)
        return super().deliver(purchase, step)

    def quote(self, purchase: Purchase, step: StepContext) -> Next | None:
        self.quoted.append((purchase.id, step))
        self._asked(purchase)
        return super().quote(purchase, step)

    def _asked(self, purchase: Purchase) -> None:
        """The purchase as handed, and its row in Postgres as the call begins (whose claim it holds)."""
        self.handed.append(purchase)
        self.stored.append(reload(purchase.id))

    def release(self, purchase: Purchase, settings: Settings) -> None:
        self.released.append((purchase.id, settings))


def _order_unknown(*, attempts: int, evidence: str | None = "may_exist", upto: State = State.ORDER_UNKNOWN) -> uuid.UUID:
    """A purchase whose order outcome is unknown (or, `upto`, still QUOTED or ORDERING), claimed
    `attempts` times already, claimable now."""
    purchase_id = stored_purchase()
    steps = ((State.QUOTED, {"quote_id": f"TOYQ-{purchase_id}", "unit_price": Decimal("12.50"),
                             "subtotal": Decimal("25.00"),
                             "quote_expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}),
             (State.ORDERING, {"order_evidence": evidence}),
             (State.ORDER_UNKNOWN, {}))
    for to_state, changes in steps[:[state for state, _ in steps].index(upto) + 1]:
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=0, changes=changes)
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET attempts = :n WHERE id = :id"), {"n": attempts, "id": purchase_id})
    return purchase_id


def _settings():  # type: ignore[no-untyped-def]
    return get_settings().model_copy(update={"order_resolve_attempts": LIMIT})


def _history(purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    with session_scope() as session:
        return state_machine.history(session, purchase_id)


def _claim_live(stored: Purchase, handed: Purchase, settings: Settings) -> bool:
    """The purchase's row holds the claim the flow was handed, for most of a lease still."""
    left = settings.claim_lease_seconds / 2
    return (stored.claim_token is not None and stored.claim_token == handed.claim_token
            and stored.claimed_until is not None
            and stored.claimed_until > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left))


def test_past_the_limit_a_flow_that_does_not_count_stops_in_needs_attention_unasked() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _order_unknown(attempts=LIMIT)  # this claim is attempt LIMIT + 1
    assert resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m-limit") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    assert flow.resolved == []
    stop = _history(purchase_id)[-1]
    assert (stop.to_state, stop.message_id) == ("needs_attention", "m-limit")
    assert stop.reason == f"order outcome still unknown after {LIMIT} attempts"


def test_within_the_limit_the_flow_is_asked_holding_the_claim() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _order_unknown(attempts=LIMIT - 1)  # this claim is attempt LIMIT: the last one allowed
    resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m")
    assert flow.resolved == [purchase_id]  # what it decided is the flow's (flowkit.orders.wait_or_hold)
    assert _claim_live(flow.stored[0], flow.handed[0], _settings())


def test_a_flow_that_counts_its_own_waits_is_asked_past_the_core_s_limit() -> None:
    """The flow the purchase's own partner names (not a default for every partner) decides."""
    flow = RecordingFlow(counts_its_own_waits=True)
    purchase_id = _order_unknown(attempts=LIMIT + 5)
    resolve_order(purchase_id, partner=Partners(flows={"tbb": flow}), settings=_settings(), message_id="m")
    assert flow.resolved == [purchase_id]


@pytest.mark.parametrize("evidence", ["exists", "may_exist", None])
def test_an_order_attempt_that_never_reported_back_is_resolved_holding_its_claim(evidence: str | None) -> None:
    """A purchase left ORDERING (its worker killed, or its call outlived its lease) becomes
    ORDER_UNKNOWN by the resolving message, its evidence kept (or "may exist": whatever was sent may
    have reached the partner), and its flow is asked under a claim it still holds."""
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _order_unknown(attempts=0, evidence=evidence, upto=State.ORDERING)
    resolve_order(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m-resolve")
    assert flow.resolved == [purchase_id]
    stored, handed = flow.stored[0], flow.handed[0]
    assert (stored.state, handed.state) == (State.ORDER_UNKNOWN, State.ORDER_UNKNOWN)
    assert stored.order_evidence == (evidence or "may_exist")
    assert _claim_live(stored, handed, _settings())
    taken = _history(purchase_id)[-1]
    assert (taken.from_state, taken.to_state, taken.message_id) == ("ordering", "order_unknown", "m-resolve")
    assert taken.reason == (f"the order attempt with quote {stored.quote_id} never reported back; resolving")


def _quoted_too_close() -> tuple[uuid.UUID, Settings]:
    """A QUOTED purchase, claimable, and settings under which its delivery deadline (3 days away) is too close."""
    return (_order_unknown(attempts=0, upto=State.QUOTED),
            _settings().model_copy(update={"min_delivery_lead_seconds": 4 * 86400.0}))


def test_an_order_step_too_close_to_the_deadline_fails_it_and_releases_what_the_partner_holds() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id, settings = _quoted_too_close()
    assert place_order(purchase_id, partner=Partners(default=flow), settings=settings, message_id="m-late") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, DEADLINE_CODE)
    assert flow.ordered == []
    assert flow.released == [(purchase_id, settings)]
    failed = _history(purchase_id)[-1]
    assert (failed.to_state, failed.message_id) == ("failed", "m-late")


def test_too_close_to_the_deadline_a_purchase_whose_partner_is_not_enabled_fails_too() -> None:
    purchase_id, settings = _quoted_too_close()
    assert place_order(purchase_id, partner=Partners(flows={}), settings=settings, message_id="m") is None
    assert (reload(purchase_id).state, reload(purchase_id).failure_code) == (State.FAILED, DEADLINE_CODE)


def _received(*, quotes_taken: int = 0) -> uuid.UUID:
    purchase_id = stored_purchase()
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET quotes_taken = :n, next_action_at = now() WHERE id = :id"),
                        {"n": quotes_taken, "id": purchase_id})
    return purchase_id


def test_a_quote_step_too_close_to_the_deadline_fails_it_by_its_message_unquoted() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    settings = _settings().model_copy(update={"min_delivery_lead_seconds": 4 * 86400.0})
    purchase_id = _received()
    assert quote(purchase_id, partner=Partners(default=flow), settings=settings, message_id="m-q") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, DEADLINE_CODE)
    assert flow.quoted == [] and flow.released == [(purchase_id, settings)]
    failed = _history(purchase_id)[-1]
    assert (failed.to_state, failed.message_id, failed.reason) == ("failed", "m-q", "delivery deadline too close to order")


def test_past_the_requote_limit_the_quote_step_fails_it_by_its_message() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    settings = _settings().model_copy(update={"max_requotes": 2})
    purchase_id = _received(quotes_taken=3)
    assert quote(purchase_id, partner=Partners(default=flow), settings=settings, message_id="m-limit") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code, purchase.failure_message) == (
        State.FAILED, "REQUOTE_LIMIT", "3 quotes taken, none could be ordered")
    assert flow.quoted == [] and flow.released == [(purchase_id, settings)]
    failed = _history(purchase_id)[-1]
    assert (failed.to_state, failed.message_id, failed.reason) == ("failed", "m-limit", "re-quote limit reached (2 re-quotes)")


def test_at_the_requote_limit_the_flow_quotes_with_the_step_s_context() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    settings = _settings().model_copy(update={"max_requotes": 2})
    purchase_id = _received(quotes_taken=2)
    quote(purchase_id, partner=Partners(flows={"tbb": flow}), settings=settings, message_id="m-q", hand_over=True)
    [(quoted, step)] = flow.quoted
    assert quoted == purchase_id and (step.settings, step.message_id, step.hand_over) == (settings, "m-q", True)
    assert _claim_live(flow.stored[0], flow.handed[0], settings)  # the flow works under a live lease
    assert reload(purchase_id).state == State.QUOTED


def test_a_claim_handed_over_for_another_purchase_or_state_is_refused_naming_both() -> None:
    """The order step run in line takes the quote step's claim: one for another purchase, or for a
    purchase in a state this step does not work on, is a programming error, said plainly."""
    from fulfilment.flowkit.fencing import Claim

    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id, other_id = _received(), _received()
    handed = Claim(purchase=reload(other_id), started=0.0)
    with pytest.raises(ValueError) as refused:
        quote(purchase_id, partner=Partners(default=flow), settings=_settings(), claim=handed)
    assert str(refused.value) == (f"claim handed over for {other_id} (received), "
                                  f"not for purchase {purchase_id} in received, paused")
    assert flow.quoted == [] and reload(purchase_id).attempts == 0


def _parked_as_not_enabled(purchase_id: uuid.UUID, state: State, settings: Settings) -> None:
    purchase = reload(purchase_id)
    waits = (purchase.next_action_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert purchase.state == state
    assert purchase.last_error == "partner 'tbb' is not enabled in this process (its *_ENABLED setting)"
    assert settings.payment_pause_seconds - 30 < waits <= settings.payment_pause_seconds
    assert (purchase.claim_token, purchase.claimed_until, purchase.failure_code) == (None, None, None)


def _ordered(waiting: State, *, due: bool = True) -> uuid.UUID:
    """A purchase whose order is confirmed, waiting in `waiting` (its transfer or its tickets)."""
    purchase_id = _order_unknown(attempts=0, upto=State.ORDERING)
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), waiting, reason="test",
                                 next_action_in=0 if due else 600,
                                 changes={"order_id": f"TOYO-{purchase_id}", "order_status": "pending"})
    return purchase_id


STEP_OF = {State.RECEIVED: quote, State.QUOTED: place_order, State.ORDER_UNKNOWN: resolve_order,
           State.AWAITING_TRANSFER: check_transfer, State.AWAITING_TICKETS: fetch_tickets}


def _at(state: State) -> uuid.UUID:
    if state in (State.AWAITING_TRANSFER, State.AWAITING_TICKETS):
        return _ordered(state)
    return _received() if state == State.RECEIVED else _order_unknown(attempts=0, upto=state)


def test_a_delivery_step_hands_a_due_purchase_to_its_flow_under_a_live_claim() -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _ordered(State.AWAITING_TRANSFER)
    check_transfer(purchase_id, partner=Partners(flows={"tbb": flow}), settings=_settings(), message_id="m-d")
    [(delivered, step)] = flow.delivered
    assert delivered == purchase_id and (step.settings, step.message_id) == (_settings(), "m-d")
    assert _claim_live(flow.stored[0], flow.handed[0], _settings())
    assert reload(purchase_id).state == State.TRANSFER_COMPLETE


def test_a_delivery_step_leaves_a_purchase_whose_next_check_is_not_due_alone() -> None:
    """A duplicate nudge finds the next check in the future and does nothing."""
    flow = RecordingFlow(counts_its_own_waits=False)
    purchase_id = _ordered(State.AWAITING_TRANSFER, due=False)
    assert check_transfer(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m") is None
    assert flow.delivered == [] and reload(purchase_id).claim_token is None


@pytest.mark.parametrize(("waiting", "step", "flow_waits_in", "code", "kind", "does_not"), [
    (State.AWAITING_TICKETS, fetch_tickets, State.AWAITING_TRANSFER, "NO_TICKET_FLOW", "ticket", "does not issue tickets"),
    (State.AWAITING_TRANSFER, check_transfer, State.AWAITING_TICKETS, "NO_TRANSFER_FLOW", "transfer",
     "does not transfer orders"),
])
def test_a_purchase_waiting_for_a_delivery_its_flow_does_not_make_goes_to_a_person(
        waiting: State, step: Any, flow_waits_in: State, code: str, kind: str, does_not: str) -> None:
    flow = RecordingFlow(counts_its_own_waits=False)
    flow.ordered_state = flow_waits_in
    purchase_id = _ordered(waiting)
    assert step(purchase_id, partner=Partners(default=flow), settings=_settings(), message_id="m-x") is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code, purchase.failure_message) == (
        State.NEEDS_ATTENTION, code, f"partner 'tbb' {does_not}")
    assert flow.delivered == []
    held = _history(purchase_id)[-1]
    assert (held.message_id, held.reason) == ("m-x", f"no {kind} flow for this partner")


@pytest.mark.parametrize("upto", list(STEP_OF))
def test_a_purchase_whose_partner_is_not_enabled_waits_for_one_that_is(upto: State) -> None:
    """Nothing is sent and nothing is burnt: it waits PAYMENT_PAUSE_SECONDS, its lease given back."""
    settings = _settings().model_copy(update={"payment_pause_seconds": 600.0})
    purchase_id = _at(upto)
    step = STEP_OF[upto]
    assert step(purchase_id, partner=Partners(flows={}), settings=settings, message_id="m") is None
    _parked_as_not_enabled(purchase_id, upto, settings)


@pytest.mark.parametrize("upto", list(STEP_OF))
def test_a_wait_for_a_partner_not_enabled_of_a_purchase_taken_over_is_noted_late_by_its_message(
        upto: State, monkeypatch: pytest.MonkeyPatch) -> None:
    real_park = flow_module.park

    def taken_over_first(purchase: Purchase, **kwargs: object) -> bool:
        with session_scope() as session:
            session.execute(text("UPDATE purchases SET claim_token = gen_random_uuid() WHERE id = :id"),
                            {"id": purchase.id})
        return real_park(purchase, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(flow_module, "park", taken_over_first)
    purchase_id = _at(upto)
    step = STEP_OF[upto]
    assert step(purchase_id, partner=Partners(flows={}), settings=_settings(), message_id="m-parked") is None
    late = _history(purchase_id)[-1]
    assert (late.kind, late.message_id) == ("late_answer", "m-parked")
    assert "not enabled in this process" in late.reason


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
