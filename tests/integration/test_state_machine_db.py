"""The one transition function against real Postgres: guarded, recorded, atomic."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.state_machine import IllegalTransition, StaleTransition, State
from models import OutboxEvent, Purchase, PurchaseTransition
from tests.support.factories import reload, stored_purchase


def counts(purchase_id: uuid.UUID) -> tuple[int, int]:
    with session_scope() as session:
        transitions = session.scalar(
            select(func.count()).select_from(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id))
        events = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id))
    return transitions or 0, events or 0


def test_creation_writes_history_and_one_event() -> None:
    purchase_id = stored_purchase()
    assert counts(purchase_id) == (1, 1)
    with session_scope() as session:
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)).one()
    assert event.routing_key == "purchase.received"
    assert event.payload["event_id"] == str(event.id)
    assert event.payload["state"] == "received" and event.payload["previous_state"] is None


def test_transition_updates_state_history_and_outbox_together() -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        purchase = session.get_one(Purchase, purchase_id)
        state_machine.transition(session, purchase, State.FAILED, reason="because",
                                 changes={"failure_code": "EVENT_NOT_FOUND", "failure_message": "no such event"})
    purchase = reload(purchase_id)
    assert purchase.state == "failed" and purchase.next_action_at is None
    assert counts(purchase_id) == (2, 2)
    with session_scope() as session:
        last = state_machine.history(session, purchase_id)[-1]
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.transition_id == last.id)).one()
    assert (last.from_state, last.to_state, last.reason) == ("received", "failed", "because")
    assert event.payload["failure"] == {"code": "EVENT_NOT_FOUND", "message": "no such event"}


def test_stale_transition_writes_nothing() -> None:
    purchase_id = stored_purchase()
    stale = reload(purchase_id)  # RECEIVED, as a slow worker saw it
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.PAUSED,
                                 reason="first", next_action_in=60)
    with pytest.raises(StaleTransition), session_scope() as session:
        state_machine.transition(session, stale, State.FAILED, reason="second")
    assert reload(purchase_id).state == "paused"
    assert counts(purchase_id) == (2, 2)


def test_illegal_transition_is_refused_before_writing() -> None:
    purchase_id = stored_purchase()
    with pytest.raises(IllegalTransition), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.AWAITING_TRANSFER,
                                 reason="skip ahead", next_action_in=1)
    assert reload(purchase_id).state == "received"
    assert counts(purchase_id) == (1, 1)


def test_a_failure_later_in_the_transaction_rolls_back_state_history_and_event() -> None:
    purchase_id = stored_purchase()
    with pytest.raises(RuntimeError), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.FAILED, reason="x")
        raise RuntimeError("crash before commit")
    assert reload(purchase_id).state == "received"
    assert counts(purchase_id) == (1, 1)


def test_history_is_append_only_in_the_database() -> None:
    purchase_id = stored_purchase()
    for statement in ("UPDATE purchase_transitions SET reason = 'edited' WHERE purchase_id = :id",
                      "DELETE FROM purchase_transitions WHERE purchase_id = :id"):
        with pytest.raises(DBAPIError, match="append-only"), session_scope() as session:
            session.execute(text(statement), {"id": purchase_id})


def test_live_states_need_a_next_action_and_terminal_ones_refuse_it() -> None:
    purchase_id = stored_purchase()
    with pytest.raises(ValueError), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.PAUSED, reason="x")
    with pytest.raises(ValueError), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.FAILED, reason="x",
                                 next_action_in=5)


def test_claim_is_exclusive_until_released() -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        first = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30)
    with session_scope() as session:
        second = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30)
    assert first is not None and first.attempts == 1
    assert second is None
    with session_scope() as session:
        state_machine.release(session, first, retry_in=5, error="boom")
    with session_scope() as session:
        third = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30)
    assert third is not None and third.attempts == 2 and third.last_error == "boom"


def test_claim_ignores_other_states_and_expired_leases_can_be_taken_over() -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.QUOTED], lease_seconds=30) is None
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=0.001) is not None
    import time

    time.sleep(0.05)
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30) is not None


def test_only_if_due_claims_wait_for_the_next_action_time() -> None:
    purchase_id = stored_purchase()  # next action in REDRIVE_AFTER_SECONDS (3 s)
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=5, only_if_due=True) is None
        session.execute(text("UPDATE purchases SET next_action_at = now() - interval '1 second' WHERE id = :id"),
                        {"id": purchase_id})
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=5,
                                   only_if_due=True) is not None
