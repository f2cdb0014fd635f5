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
