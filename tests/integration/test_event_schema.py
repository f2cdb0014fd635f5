"""Every kind of event the state machine writes matches the published JSON Schema."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import jsonschema
from sqlalchemy import select

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.partners.base import Order, order_details
from fulfilment.state_machine import State
from models import OutboxEvent, Purchase
from tests.support.factories import stored_purchase
from tests.support.servers import REPO

SCHEMA = json.loads((REPO / "docs" / "schemas" / "purchase-event.schema.json").read_text())


def test_events_of_a_whole_life_validate() -> None:
    purchase_id = stored_purchase(metadata={"basket": "b-1"},
                                  delivery_deadline=(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
                                  .strftime("%Y-%m-%dT%H:%M:%SZ"))
    steps = [
        (State.QUOTED, {"quote_id": "qt_1", "quote_expires_at": dt.datetime.now(dt.UTC)}, 5),
        (State.ORDERING, {}, 5),
        (State.AWAITING_TRANSFER, {"order_id": "TBB-1", "order_status": "awaiting_transfer",
                                   "transfer_email": "t@ticketbuyback.com", "seat_range": "1-2",
                                   "unit_price": Decimal("10.00")}, 5),
    ]
    for to_state, changes, next_in in steps:
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=next_in, changes=changes)
    with session_scope() as session:
        assert state_machine.flag_deadline(session, session.get_one(Purchase, purchase_id), 2.0)
        assert not state_machine.flag_deadline(session, session.get_one(Purchase, purchase_id), 2.0)
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.TRANSFER_COMPLETE,
                                 reason="test", changes={"order_status": "transfer_complete"})

    failed_id = stored_purchase()
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, failed_id), State.FAILED, reason="test",
                                 changes={"failure_code": "EVENT_NOT_FOUND", "failure_message": "no"})

    # A late answer, and an order that arrived after the purchase failed (kept as an orphan).
    with session_scope() as session:
        state_machine.late_answer(session, failed_id, step="place_order", answer="QUOTE_EXPIRED", message_id="m")
        state_machine.orphan_order(
            session, session.get_one(Purchase, failed_id, with_for_update=True), message_id=None,
            order=order_details(Order("TBB-ORPHAN-1", "awaiting_transfer", "qt_9", "t@ticketbuyback.com", "3-4", "B",
                                      Decimal("12.50"), Decimal("25.00"))),
            reason="order TBB-ORPHAN-1 arrived after the purchase failed",
        )

    with session_scope() as session:
        events = session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id.in_([purchase_id, failed_id]))
                                 .order_by(OutboxEvent.transition_id)).all()
    kinds = [e.routing_key for e in events]
    assert kinds.count("purchase.deadline_near") == 1
    assert {"purchase.received", "purchase.awaiting_transfer", "purchase.transfer_complete",
            "purchase.failed", "purchase.late_answer", "purchase.orphan_order"} <= set(kinds)
    checker = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for event in events:
        checker.validate(event.payload)
        assert event.payload["type"] == event.routing_key
    completed = next(e for e in events if e.routing_key == "purchase.transfer_complete").payload
    assert completed["metadata"] == {"basket": "b-1"} and completed["order"]["transfer_email"]
    orphan = next(e for e in events if e.routing_key == "purchase.orphan_order").payload
    assert orphan["orphan_order"]["order_id"] == "TBB-ORPHAN-1" and orphan["state"] == "failed"
    failed = next(e for e in events if e.routing_key == "purchase.failed").payload
    assert failed["failure"] == {"code": "EVENT_NOT_FOUND", "message": "no"}
