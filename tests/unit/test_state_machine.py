"""The transition table: every legal move allowed, every other one refused."""

from __future__ import annotations

import itertools

import pytest

from fulfilment.state_machine import (
    ALLOWED,
    HELD_FOR_OPERATOR,
    NEXT_STEP,
    TERMINAL,
    IllegalTransition,
    State,
    check_transition,
    is_live,
)
from models.purchase import STATE_VALUES

# The transitions the design allows, written out by hand (not derived from ALLOWED, so that a wrong
# entry in the code's table fails here): source -> targets, with why.
DESIGN: dict[str | None, set[str]] = {
    None: {"received"},  # born received only
    # quote path: a quote; a permanent refusal, an account problem, retries exhausted; an order that
    # turned up unexpected
    "received": {"quoted", "failed", "paused", "stalled", "needs_attention"},
    "paused": {"quoted", "failed", "paused", "stalled", "needs_attention"},
    # the intent; re-quote (margin, no call); deadline too close; stall; orphan
    "quoted": {"ordering", "received", "failed", "stalled", "needs_attention"},
    # only the definite answer to the one request leads away from the order path
    "ordering": {"awaiting_transfer", "awaiting_tickets", "order_unknown", "received", "failed", "paused",
                 "needs_attention", "stalled"},
    # found, held, or re-quoted under ORDER_ABSENCE_GRACE_SECONDS only; never failed or paused
    "order_unknown": {"awaiting_transfer", "awaiting_tickets", "received", "needs_attention", "stalled"},
    "awaiting_transfer": {"transfer_complete", "transfer_expired", "cancelled", "needs_attention", "stalled"},
    "awaiting_tickets": {"tickets_issued", "needs_attention", "stalled"},
    # an operator resumes into resolution (never straight back to quoting), records an order, or gives up
    "needs_attention": {"order_unknown", "awaiting_transfer", "awaiting_tickets", "failed"},
    "stalled": {"received", "quoted", "order_unknown", "awaiting_transfer", "awaiting_tickets", "paused",
                "needs_attention", "failed"},
    "transfer_complete": set(),
    "transfer_expired": set(),
    "cancelled": set(),
    "failed": set(),
    "tickets_issued": set(),
}
LEGAL = {(None if src is None else State(src), State(dst)) for src, targets in DESIGN.items() for dst in targets}
ALL_PAIRS = list(itertools.product([None, *State], State))


def test_the_code_allows_exactly_the_designed_transitions() -> None:
    code = {(src, dst) for src, targets in ALLOWED.items() for dst in targets}
    assert set(DESIGN) == {None, *(s.value for s in State)}
    assert code - LEGAL == set(), "allowed by the code, not by the design"
    assert LEGAL - code == set(), "allowed by the design, not by the code"


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(ALLOWED) == {None, *State}


def test_database_check_constraint_lists_exactly_the_states() -> None:
    assert set(STATE_VALUES) == {s.value for s in State}


@pytest.mark.parametrize(("src", "dst"), sorted(LEGAL, key=str))
def test_legal_transitions_pass(src: State | None, dst: State) -> None:
    check_transition(src, dst)


@pytest.mark.parametrize(("src", "dst"), [p for p in ALL_PAIRS if p not in LEGAL], ids=str)
def test_every_illegal_transition_is_refused(src: State | None, dst: State) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(src, dst)
    assert str(dst) in str(raised.value)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()


def test_a_purchase_is_born_received_only() -> None:
    assert ALLOWED[None] == {State.RECEIVED}
    check_transition(None, State.RECEIVED)
    with pytest.raises(IllegalTransition):
        check_transition(None, State.QUOTED)


def test_once_an_order_may_exist_there_is_no_path_back_to_ordering_afresh() -> None:
    """Invariant 1: from ORDERING/ORDER_UNKNOWN nothing leads to QUOTED or ORDERING directly,
    and operator states resume only into resolution, never into a fresh order."""
    for src in (State.ORDERING, State.ORDER_UNKNOWN, State.NEEDS_ATTENTION):
        assert State.QUOTED not in ALLOWED[src]
        assert State.ORDERING not in ALLOWED[src]


def test_only_order_paths_reach_awaiting_transfer() -> None:
    sources = {src for src, dst in LEGAL if dst is State.AWAITING_TRANSFER}
    assert sources == {State.ORDERING, State.ORDER_UNKNOWN, State.NEEDS_ATTENTION, State.STALLED}


def test_live_states_have_a_next_step_and_others_do_not() -> None:
    for state in State:
        expected = state not in TERMINAL and state not in HELD_FOR_OPERATOR
        assert is_live(state) is expected, state
    assert set(NEXT_STEP) == {s for s in State if is_live(s)}


def test_every_live_state_can_stall() -> None:
    for state in NEXT_STEP:
        assert State.STALLED in ALLOWED[state], state


@pytest.mark.parametrize(("partner_data", "waits_in"), [
    ({"delivery": "tickets", "cart": None}, State.AWAITING_TICKETS),  # its partner issues tickets (Ticketmaster)
    ({"delivery": "transfer"}, State.AWAITING_TRANSFER),
    ({}, State.AWAITING_TRANSFER),
    (None, State.AWAITING_TRANSFER),  # a partner that keeps no data of its own (TBB): a transfer to watch
])
def test_a_confirmed_order_waits_for_its_tickets_or_its_transfer(partner_data: dict | None, waits_in: State) -> None:
    from fulfilment.state_machine import ordered_state
    from models import Purchase

    assert ordered_state(Purchase(partner_data=partner_data)) == waits_in
