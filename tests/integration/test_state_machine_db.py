"""The one transition function against real Postgres: guarded, recorded, atomic."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from fulfilment import state_machine
from fulfilment.db import autocommit, session_scope
from fulfilment.state_machine import IllegalTransition, StaleTransition, State
from fulfilment.statements import Row
from models import OrphanOrder, OutboxEvent, PartnerQuote, Purchase, PurchaseTransition
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
    assert (event.payload["previous_state"], event.payload["state"]) == ("received", "failed")
    assert event.payload["failure"] == {"code": "EVENT_NOT_FOUND", "message": "no such event"}


def test_a_transition_is_logged_counted_and_leaves_no_stale_copy_in_the_session(
        caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import REGISTRY

    purchase_id = stored_purchase()
    before = REGISTRY.get_sample_value("fulfil_events_total", {"event": "purchase.paused"}) or 0.0
    with caplog.at_level("INFO", logger="fulfilment.state_machine"), session_scope() as session:
        held = session.get_one(Purchase, purchase_id)
        state_machine.transition(session, held, State.PAUSED, reason="waiting", next_action_in=60)
        assert held.state == "paused"  # the session's copy was expired, not left as it was
    assert f"purchase {purchase_id}: received -> paused (waiting)" in caplog.messages
    assert REGISTRY.get_sample_value("fulfil_events_total", {"event": "purchase.paused"}) == before + 1


def test_stale_transition_writes_nothing() -> None:
    purchase_id = stored_purchase()
    stale = reload(purchase_id)  # RECEIVED, as a slow worker saw it
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.PAUSED,
                                 reason="first", next_action_in=60)
    with pytest.raises(StaleTransition) as refused, session_scope() as session:
        state_machine.transition(session, stale, State.FAILED, reason="second")
    assert (refused.value.purchase_id, refused.value.expected) == (purchase_id, State.RECEIVED)
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
    with pytest.raises(ValueError, match="^paused: next_action_in must be set$"), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.PAUSED, reason="x")
    with pytest.raises(ValueError, match="^failed: next_action_in must be None$"), session_scope() as session:
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
    with session_scope() as session:  # a release that names no error leaves the last one for operators
        assert state_machine.release(session, third, retry_in=5)
    assert reload(purchase_id).last_error == "boom"


def test_claim_ignores_other_states_and_expired_leases_can_be_taken_over() -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.QUOTED], lease_seconds=30) is None
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=0.001) is not None
    import time

    time.sleep(0.05)
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30) is not None


def test_every_log_line_after_a_claim_names_the_caller_s_request() -> None:
    """A claim binds the purchase's request_id to the thread's log context (the worker middleware
    resets it when the message is done): an operator finds a step's lines by the caller's id."""
    from fulfilment import logging_setup

    purchase_id = stored_purchase()
    token = logging_setup.bind(message_id="m-1")
    try:
        with session_scope() as session:
            claimed = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30)
        assert claimed is not None and claimed.request_id.startswith("test-")
        bound = logging_setup.context()
        assert (bound["request_id"], bound["message_id"]) == (claimed.request_id, "m-1")
    finally:
        logging_setup.unbind(token)


def test_an_orphan_order_is_kept_once_with_what_the_partner_said() -> None:
    """Invariant 8: the orphan_orders row keeps the order's id, quote and status, and all it said; the
    history row names the purchase's state (it does not move).  The same order again keeps nothing more."""
    from prometheus_client import REGISTRY

    purchase_id = stored_purchase()
    order = {"order_id": f"ORD-{purchase_id.hex[:8]}", "quote_id": "Q-9", "status": "confirmed", "extra": [1, 2]}
    before = REGISTRY.get_sample_value("fulfil_orphan_orders_total") or 0.0
    kept = []
    for _ in range(2):
        with session_scope() as session:
            purchase = session.get_one(Purchase, purchase_id, with_for_update=True)
            kept.append(state_machine.orphan_order(session, purchase, order=order, reason="moved on", message_id="m-o"))
    assert kept == [True, False]
    assert REGISTRY.get_sample_value("fulfil_orphan_orders_total") == before + 1
    with session_scope() as session:
        [row] = session.scalars(select(OrphanOrder).where(OrphanOrder.purchase_id == purchase_id)).all()
        assert (row.order_id, row.partner, row.quote_id, row.order_status, row.reason) == (
            order["order_id"], "tbb", "Q-9", "confirmed", "moved on")
        assert row.details == order
        rows = session.scalars(select(PurchaseTransition).where(
            PurchaseTransition.purchase_id == purchase_id, PurchaseTransition.kind == "orphan_order")).all()
    assert [(r.from_state, r.to_state, r.message_id, r.reason) for r in rows] == [
        ("received", "received", "m-o", "moved on")]


def test_a_late_answer_waits_for_a_change_in_flight_and_names_the_state_it_left() -> None:
    """late_answer locks the purchase: an answer noted while another transaction moves the purchase
    is recorded after that change, naming the state the purchase is really in (and counted by step)."""
    import threading
    import time

    from prometheus_client import REGISTRY

    purchase_id = stored_purchase()
    noted: list[State | None] = []
    before = REGISTRY.get_sample_value("fulfil_late_answers_total", {"step": "quote"}) or 0.0
    with session_scope() as mover:
        mover.execute(text("UPDATE purchases SET state = 'paused' WHERE id = :id"), {"id": purchase_id})

        def note() -> None:
            with session_scope() as session:
                noted.append(state_machine.late_answer(session, purchase_id, step="quote", answer="Q-1",
                                                       message_id="m-late"))

        thread = threading.Thread(target=note)
        thread.start()
        time.sleep(0.5)  # the late answer reads the purchase while the change is in flight
    thread.join(timeout=30)
    assert noted == [State.PAUSED]
    assert REGISTRY.get_sample_value("fulfil_late_answers_total", {"step": "quote"}) == before + 1
    with session_scope() as session:
        late = session.scalars(select(PurchaseTransition).where(
            PurchaseTransition.purchase_id == purchase_id, PurchaseTransition.kind == "late_answer")).one()
    assert (late.from_state, late.to_state, late.message_id) == ("paused", "paused", "m-late")
    assert late.reason == "late answer from quote, not applied: Q-1"


def test_a_release_or_a_save_leaves_no_stale_copy_in_the_session() -> None:
    """Both are one statement behind the ORM's back: the session's copy of the purchase is expired,
    so the caller reads what Postgres holds now."""
    purchase_id = stored_purchase()
    with session_scope() as session:
        purchase = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30)
        assert purchase is not None
        held = session.get_one(Purchase, purchase_id)
        assert held.claim_token == purchase.claim_token
        state_machine.save(session, held, last_error="progress")
        assert held.last_error == "progress"
        assert state_machine.release(session, held, retry_in=5)
        assert (held.claim_token, held.claimed_until) == (None, None)


def test_a_save_under_a_claim_taken_over_raises_naming_the_purchase_and_changes_nothing() -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        first = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=30)
    assert first is not None
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET claim_token = gen_random_uuid() WHERE id = :id"), {"id": purchase_id})
    with pytest.raises(StaleTransition) as stale, session_scope() as session:
        state_machine.save(session, first, last_error="late progress")
    assert (stale.value.purchase_id, stale.value.expected) == (purchase_id, State.RECEIVED)
    assert reload(purchase_id).last_error is None


def test_the_one_statement_changes_run_on_a_sqlalchemy_connection_too() -> None:
    """An Executor may be a Session, a psycopg connection (the steps' hot path) or a SQLAlchemy
    Connection (a caller's own transaction): the same statements, the same answers."""
    from fulfilment.db import get_engine

    purchase_id = stored_purchase()
    with get_engine().begin() as connection:
        claimed = state_machine.claim(connection, purchase_id, [State.RECEIVED], lease_seconds=30)
        assert claimed is not None and claimed.claim_token is not None
        assert state_machine.release(connection, claimed, retry_in=5, error="later")
    with get_engine().begin() as connection:
        again = state_machine.claim(connection, purchase_id, [State.RECEIVED], lease_seconds=30)
        assert again is not None
        moved = state_machine.transition(connection, again, State.PAUSED, reason="on a connection", next_action_in=60)
        assert moved.state == "paused"
        assert not state_machine.release(connection, again, retry_in=5)  # a stale claim: no row changed
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.last_error) == ("paused", "later")


def test_only_if_due_claims_wait_for_the_next_action_time() -> None:
    purchase_id = stored_purchase()  # next action in REDRIVE_AFTER_SECONDS (3 s)
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=5, only_if_due=True) is None
        session.execute(text("UPDATE purchases SET next_action_at = now() - interval '1 second' WHERE id = :id"),
                        {"id": purchase_id})
    with session_scope() as session:
        assert state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=5,
                                   only_if_due=True) is not None


# --- one statement per change (fulfilment/statements.py, issue 8) ----------------------------

def quotes_of(purchase_id: uuid.UUID) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(PartnerQuote.quote_id).where(PartnerQuote.purchase_id == purchase_id)))


def quote_row(quote_id: str) -> Row:
    return Row(PartnerQuote.__tablename__, {
        "quote_id": quote_id, "expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), "section_name": "101",
        "row_name": None, "quantity": 2, "unit_price": Decimal("10.00"), "subtotal": Decimal("20.00"),
        "currency": "USD"})


def test_a_transition_on_an_autocommit_connection_lands_whole_with_its_row_or_not_at_all() -> None:
    purchase_id = stored_purchase()
    with autocommit() as db:
        claimed = state_machine.claim(db, purchase_id, [State.RECEIVED], lease_seconds=30)
        assert claimed is not None
        quote_id = f"qt_{uuid.uuid4().hex[:8]}"
        quoted = state_machine.transition(
            db, claimed, State.QUOTED, reason="quoted", next_action_in=5, insert_with=quote_row(quote_id),
            changes={"quote_id": quote_id, "quotes_taken": 1})
        # The same claim again (a late answer of the same worker): the guard finds nothing, so no
        # history, no event and no quote row either.
        with pytest.raises(StaleTransition):
            state_machine.transition(db, claimed, State.QUOTED, reason="again", next_action_in=5,
                                     insert_with=quote_row("qt_never"), changes={"quote_id": "qt_never"})
    assert (quoted.state, quoted.quote_id, quoted.claim_token, quoted.claimed_until) == ("quoted", quote_id, None, None)
    assert reload(purchase_id).quote_id == quote_id
    assert quotes_of(purchase_id) == [quote_id]
    assert counts(purchase_id) == (2, 2)


def test_the_event_of_a_transition_reports_the_changed_row_and_its_history_rows_time() -> None:
    purchase_id = stored_purchase()
    order_id = f"TBB-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        purchase = session.get_one(Purchase, purchase_id)
        purchase = state_machine.transition(session, purchase, State.NEEDS_ATTENTION, reason="found it",
                                            changes={"order_id": order_id, "order_status": "pending",
                                                     "failure_code": "X", "failure_message": "look"})
        last = state_machine.history(session, purchase_id)[-1]
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.transition_id == last.id)).one()
    assert purchase.order_id == order_id  # the returned purchase is the row as it is now
    assert event.payload["occurred_at"] == state_machine.utc_text(last.created_at)
    assert event.payload["order"]["order_id"] == order_id and event.payload["order"]["status"] == "pending"
    assert event.payload["failure"] == {"code": "X", "message": "look"}
    assert last.attempt == 0 and last.kind == "transition"


def test_create_stores_a_purchase_once_with_its_birth() -> None:
    purchase_id = uuid.uuid4()
    values = {"id": purchase_id, "request_id": f"req-{purchase_id}", "event_id": "1", "section_name": "101",
              "row_name": None, "quantity": 2, "delivery_type": "mobile_transfer",
              "delivery_deadline": dt.datetime.now(dt.UTC) + dt.timedelta(days=2), "max_unit_price": None,
              "request_metadata": {"order": "A-1"}}
    with autocommit() as db:
        created = state_machine.create(db, values, next_action_in=5, reason="accepted")
        assert created is not None and (created.id, created.state, created.claim_token) == (purchase_id, "received", None)
        assert state_machine.create(db, {**values, "id": uuid.uuid4()}, next_action_in=5, reason="again") is None
    stored = reload(purchase_id)
    assert (stored.state, stored.request_metadata, stored.attempts) == ("received", {"order": "A-1"}, 0)
    assert counts(purchase_id) == (1, 1)


def test_only_known_rows_go_with_a_transition() -> None:
    purchase_id = stored_purchase()
    with pytest.raises(ValueError, match="cannot insert"), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.FAILED, reason="x",
                                 insert_with=Row("purchases; DROP TABLE purchases", {"id": 1}))
    with pytest.raises(ValueError, match="no column"), session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.FAILED, reason="x",
                                 changes={"state = 'failed' --": 1})
    assert counts(purchase_id) == (1, 1)
