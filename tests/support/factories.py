"""Build purchase requests and stored purchases for tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fulfilment.db import session_scope
from fulfilment.settings import get_settings
from fulfilment.steps import intake

# Sandbox catalogue ids (fulfilment/partners/tbb/sandbox/catalogue.py).
EVENT = "5496123"
SECTION = "101"


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": f"test-{uuid.uuid4()}",
        "event_id": EVENT,
        "section_name": SECTION,
        "quantity": 2,
        "delivery_type": "mobile_transfer",
        "delivery_deadline": (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


# Ticketmaster sandbox catalogue (fulfilment/partners/ticketmaster/sandbox/catalogue.py): the FAQ's test
# event, one ticket at price level 1 costs 54.41 all in.
TM_EVENT = "000051048D991EE7"
TM_TICKET_TYPE = "000000000001"


def tm_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partner": "ticketmaster",
        "request_id": f"test-tm-{uuid.uuid4()}",
        "event_id": TM_EVENT,
        "ticket_type_id": TM_TICKET_TYPE,
        "price_level_id": "1",
        "quantity": 1,
        "max_unit_price": "60.00",
        "third_party_account_id": f"buyer-{uuid.uuid4().hex[:8]}",
        "delivery_deadline": (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # A nonce pays once: each purchase carries its own (TM_PAYMENT_SOURCE=request).
        "payment_nonce": f"fake-valid-nonce-{uuid.uuid4().hex}",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def stored_purchase(**overrides: Any) -> uuid.UUID:
    """A purchase accepted by the intake step (RECEIVED), without nudging any worker."""
    purchase_id = intake.accept(request(**overrides), settings=get_settings())
    assert purchase_id is not None
    return purchase_id


def reload(purchase_id: uuid.UUID):  # type: ignore[no-untyped-def]
    from models import Purchase

    with session_scope() as session:
        return session.get_one(Purchase, purchase_id)


def tm_awaiting_tickets(**overrides: Any) -> uuid.UUID:
    """A Ticketmaster purchase whose order is committed, its tickets not fetched yet (AWAITING_TICKETS),
    as the TM flow records it: an order number and the cart's total, no seats on the order."""
    from decimal import Decimal

    from fulfilment import state_machine
    from fulfilment.state_machine import State
    from models import Purchase

    purchase_id = intake.accept(tm_request(**overrides), settings=get_settings())
    assert purchase_id is not None
    steps = ((State.QUOTED, {"quote_id": f"cart-{purchase_id.hex[:8]}", "quote_expires_at": dt.datetime.now(dt.UTC),
                             "unit_price": Decimal("54.41"), "subtotal": Decimal("54.41")}),
             (State.ORDERING, {}),
             (State.AWAITING_TICKETS, {"order_id": f"35-{purchase_id.hex[:5]}/LA1", "order_status": "committed"}))
    for to_state, changes in steps:
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=600, changes=changes)
    return purchase_id
